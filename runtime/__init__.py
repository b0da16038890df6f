"""Process wiring: the worker process (the faust app plus its monitor, metrics and heartbeat).

The one layer that joins ingest (:mod:`streams`) and monitoring (:mod:`monitoring`).
"""

__all__: list[str] = []
