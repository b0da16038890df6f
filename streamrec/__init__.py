"""streamrec: command line, settings and local stack shared by every process."""

__all__: list[str] = []
