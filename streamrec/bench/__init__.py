"""Benchmarks behind ``streamrec bench``: ingest, serve and freshness, each side by side."""

__all__: list[str] = []
