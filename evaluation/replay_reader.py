"""The server's state reader with a replay-exact neighbour cache, for the prequential evaluator.

During a replay the evaluator alone writes the state, so it knows exactly when a neighbour
list can change: only when an event it learns touches it. :class:`ReplayStateReader` keeps
the neighbour lists it has read (``read_neighbours`` is the server's own, for the missing
anchors) until :meth:`invalidate` names their item, or :meth:`clear` drops everything. The
evaluator invalidates, after each learned batch, every item a learned event may have paired
with (its own item and its user's recent items — a superset of the processor's window), so a
cached answer is always what Redis would return. Everything else is the server's reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

from schemas.keyspace import Keyspace
from serving.state_reader import Pairs, StateReader


class ReplayStateReader(StateReader):
    """:class:`StateReader` whose ``read_neighbours`` answers from an exact cache."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keyspace,
        *,
        retry_after_s: float = 0.5,
        max_cached: int = 200_000,
    ) -> None:
        super().__init__(redis, keys, retry_after_s=retry_after_s)
        self.max_cached = max_cached
        self._cache: dict[str, tuple[int, Pairs]] = {}
        self.hits = 0
        self.misses = 0

    async def read_neighbours(
        self, anchors: Sequence[str], n: int, *, deadline: float | None
    ) -> dict[str, Pairs]:
        cache = self._cache
        out: dict[str, Pairs] = {}
        missing: list[str] = []
        for anchor in anchors:
            entry = cache.get(anchor)
            if entry is not None and entry[0] == n:
                out[anchor] = entry[1]
            else:
                missing.append(anchor)
        self.hits += len(out)
        if missing:
            self.misses += len(missing)
            fetched = await super().read_neighbours(missing, n, deadline=deadline)
            if len(cache) + len(fetched) > self.max_cached:
                cache.clear()
            for anchor, pairs in fetched.items():
                cache[anchor] = (n, pairs)
            out.update(fetched)
        return {anchor: out[anchor] for anchor in anchors}

    def invalidate(self, items: Iterable[str]) -> None:
        """Forget the neighbour lists of ``items`` (their co-visitation key may have moved)."""
        pop = self._cache.pop
        for item in items:
            pop(item, None)

    def clear(self) -> None:
        self._cache.clear()
