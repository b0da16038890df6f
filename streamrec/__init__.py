"""streamrec's top: the ``streamrec`` command line and the tools behind it (stack, bench, demo).

Nothing below this package imports it (the layer contract in pyproject.toml).
"""

__all__: list[str] = []
