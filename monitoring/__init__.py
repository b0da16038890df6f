"""Monitoring: drift, freshness, lag and CTR windows, health levels, alerts, status reports.

Pure decisions (:mod:`monitoring.monitor`, :mod:`monitoring.drift`, :mod:`monitoring.health`,
:mod:`monitoring.lag_monitor`) are kept apart from their Redis/Kafka I/O
(:mod:`monitoring.monitor_io`) and from the lag monitor process
(:mod:`monitoring.lag_monitor_service`). Independent of ingest and serving.
"""

__all__: list[str] = []
