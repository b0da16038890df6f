"""Ground every process stands on: settings, the error hierarchy, retries and client factories.

Nothing here imports another streamrec package (the layer contract in pyproject.toml).
"""

__all__: list[str] = []
