"""In-process cache of co-visitation rows (a :class:`~serving.tracked_cache.TrackedCache`).

A row cached for ``n`` neighbours answers any request for ``n`` or fewer, and for more when
the key held fewer than ``n`` (the whole row was read). See :mod:`serving.tracked_cache` for
how Redis invalidation messages keep it exact.
"""

from __future__ import annotations

from serving.tracked_cache import TrackedCache

#: a row, best first; a tuple, so that it can be shared by every request that reads it
Row = tuple[tuple[str, float], ...]


class NeighbourCache(TrackedCache[Row]):
    """Co-visitation rows by Redis key."""

    def get(self, key: str, n: int) -> Row | None:
        """The cached top ``n`` of ``key``, or None (counted as a hit or a miss)."""
        row = self.lookup(key, n)
        if row is None or len(row) <= n:
            return row
        return row[:n]
