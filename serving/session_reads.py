"""Request-path reads of the session-neighbour source (:mod:`serving.session_neighbours`).

Two reads, each one Redis round trip on the reader's request client: the anchors' session
indexes (``ZREVRANGE sn:{a} 0 sample-1``, sent alongside the co-visitation rows, so no extra
round trip) and the chosen neighbours' recent items (``LRANGE u:{v}:r 0 n-1``, the one extra
round trip). :class:`SessionReads` reads Redis every time; the evaluator's subclass keeps an
exact cache (see evaluation/replay_reader.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from serving.state_reader import StateReader, _text


def _item(entry: object) -> str:
    """The item of a ``ts|item`` recent-list entry."""
    return _text(entry).partition("|")[2]


class SessionReads:
    """The session-neighbour reads of one :class:`~serving.state_reader.StateReader`."""

    def __init__(self, reader: StateReader) -> None:
        self.reader = reader

    async def index(
        self, anchors: Sequence[str], sample: int, *, deadline: float | None
    ) -> dict[str, list[str]]:
        """The newest ``sample`` users of each anchor's session index (newest first)."""
        if not anchors:
            return {}
        key = self.reader.keys.session_index
        replies = await self.reader._request(
            [("ZREVRANGE", key(anchor), 0, sample - 1) for anchor in anchors], deadline
        )
        return {
            anchor: [_text(user) for user in raw]
            for anchor, raw in zip(anchors, replies, strict=True)
        }

    async def items(
        self, users: Sequence[str], n: int, *, deadline: float | None
    ) -> dict[str, list[str]]:
        """The newest ``n`` recent items of each of ``users`` (newest first, repeats kept)."""
        if not users:
            return {}
        key = self.reader.keys.user_recent
        replies = await self.reader._request(
            [("LRANGE", key(user), 0, n - 1) for user in users], deadline
        )
        return {
            user: [_item(entry) for entry in raw] for user, raw in zip(users, replies, strict=True)
        }
