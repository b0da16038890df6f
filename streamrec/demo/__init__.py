"""The end-to-end demo behind ``streamrec demo``: a synthetic shop driven through the real stack."""

__all__: list[str] = []
