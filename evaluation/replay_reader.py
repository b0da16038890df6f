"""The server's state reader with a replay-exact neighbour cache, for the prequential evaluator.

During a replay the evaluator alone writes the state, so it knows exactly when a neighbour
list can change: only when an event it learns touches it. :class:`ReplayStateReader` keeps
the neighbour lists it has read (``read_neighbours`` is the server's own, for the missing
anchors) until :meth:`invalidate` names their item, or :meth:`clear` drops everything. The
evaluator invalidates, after each learned batch, every item a learned event may have paired
with (its own item and its user's recent items — a superset of the processor's window), so a
cached answer is always what Redis would return.

Each prediction runs inside a :class:`PredictionScope` (the context variable :data:`SCOPE`,
so concurrent predictions each carry their own):

* the user's *pending* events — events of the micro-batch being scored that precede the
  prediction but are not learned yet (the evaluator learns a micro-batch after scoring all of
  it) — are overlaid on ``read_user``: the recent list and seen set come back exactly as Redis
  will hold them once the processor applied those events (LPUSH + LTRIM of the ``ts|item``
  entries, ZADD of the seen scores + trim to the newest ``seen_max``), so a user's own history
  is always exact;
* the recommenders asked the same question (streamrec and the popularity baseline) share one
  ``read_user`` round trip.

Everything else is the server's reader. The session-neighbour reads go through
:class:`ReplaySessionReads`, cached exactly in the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from schemas.keyspace import Keyspace, format_recent, parse_recent
from serving.session_reads import SessionReads
from serving.state_reader import Row, StateReader, UserQuery, UserState, _pairs, _text


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event of the user that precedes the prediction but is not in Redis yet."""

    ts: float
    item_id: str
    #: the processor pushes it on the recent list (its event type has a positive weight)
    recent: bool


@dataclass(slots=True)
class PredictionScope:
    """One prediction: its user's pending events (oldest first) and its shared reads."""

    pending: tuple[PendingEvent, ...] = ()
    reads: dict[UserQuery, asyncio.Future[UserState]] = field(default_factory=dict)


#: the prediction being answered (None outside the evaluator's predictions)
SCOPE: ContextVar[PredictionScope | None] = ContextVar("replay_prediction", default=None)


class ReplayStateReader(StateReader):
    """:class:`StateReader` whose ``read_neighbours`` answers from an exact cache."""

    tracks_reads = False  # its own exact caches instead (read-your-writes)

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keyspace,
        *,
        retry_after_s: float = 0.5,
        max_cached: int = 200_000,
        seen_max: int = 128,
    ) -> None:
        super().__init__(redis, keys, retry_after_s=retry_after_s)
        self.max_cached = max_cached
        self.seen_max = seen_max
        self._cache: dict[str, tuple[int, Row]] = {}
        self.hits = 0
        self.misses = 0

    async def read_neighbours(
        self, anchors: Sequence[str], n: int, *, deadline: float | None
    ) -> dict[str, Row]:
        cache = self._cache
        out: dict[str, Row] = {}
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
                # a tuple: the ranker reuses its prepared form while the row is the same object
                row = out[anchor] = tuple(pairs)
                cache[anchor] = (n, row)
        return {anchor: out[anchor] for anchor in anchors}

    async def read_user(
        self,
        *,
        user_id: str | None,
        session_id: str | None,
        max_recent: int,
        with_seen: bool,
        segment: str | None,
        top_n: int,
        deadline: float | None,
    ) -> UserState:
        """The server's RT1, shared inside a :data:`SCOPE`, with its pending events on top."""
        question = UserQuery(user_id, session_id, max_recent, with_seen, segment, top_n)
        scope = SCOPE.get()
        if scope is None:
            return await self._read_user((), question, deadline)
        shared = scope.reads.get(question)
        if shared is None:
            shared = scope.reads[question] = asyncio.ensure_future(
                self._read_user(scope.pending, question, deadline)
            )
        return await shared

    async def _read_user(
        self, pending: tuple[PendingEvent, ...], question: UserQuery, deadline: float | None
    ) -> UserState:
        user_id, max_recent, with_seen, segment = (
            question.user_id,
            question.max_recent,
            question.with_seen,
            question.segment,
        )
        if not pending or not user_id:
            return await super().read_user(**question._asdict(), deadline=deadline)
        commands = self.user_commands(*question, seen_scores=True)
        replies = await self._request(commands, deadline)
        stored = [_text(entry) for entry in replies[0]]
        pushed = [format_recent(p.ts, p.item_id) for p in pending if p.recent]
        recent = parse_recent([*reversed(pushed), *stored][:max_recent])
        seen: frozenset[str] = frozenset()
        if with_seen:
            scores = dict(_pairs(replies[1]))
            for event in pending:
                scores[event.item_id] = event.ts
            kept = sorted(scores.items(), key=lambda pair: (pair[1], pair[0]))[-self.seen_max :]
            seen = frozenset(item for item, _ in kept)
        popularity = _pairs(replies[-1]) if segment is not None else None
        return UserState(recent, seen, popularity)

    def invalidate(self, items: Iterable[str]) -> None:
        """Forget the neighbour lists of ``items`` (their co-visitation key may have moved)."""
        pop = self._cache.pop
        for item in items:
            pop(item, None)

    def clear(self) -> None:
        self._cache.clear()


class ReplaySessionReads(SessionReads):
    """:class:`SessionReads` with exact caches: during a replay only the evaluator writes, and
    it forgets (:meth:`invalidate`) the session index of every item and the recent list of
    every user a learned event touched, so a cached answer is what Redis would return.

    The batch protocol's own-history writes (``remember``) touch only test users' recent
    lists: they never enter a session index, so they are never read here as neighbours —
    except a test user that also had training events; the evaluator invalidates those too.
    """

    def __init__(self, reader: StateReader, *, max_cached: int = 200_000) -> None:
        super().__init__(reader)
        self.max_cached = max_cached
        self._index: dict[str, tuple[int, list[str]]] = {}
        self._items: dict[str, tuple[int, list[str]]] = {}

    async def index(
        self, anchors: Sequence[str], sample: int, *, deadline: float | None
    ) -> dict[str, list[str]]:
        return await self._cached(self._index, anchors, sample, super().index, deadline)

    async def items(
        self, users: Sequence[str], n: int, *, deadline: float | None
    ) -> dict[str, list[str]]:
        return await self._cached(self._items, users, n, super().items, deadline)

    async def _cached(
        self,
        cache: dict[str, tuple[int, list[str]]],
        names: Sequence[str],
        n: int,
        read: Callable[..., Awaitable[dict[str, list[str]]]],
        deadline: float | None,
    ) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        missing: list[str] = []
        for name in names:
            entry = cache.get(name)
            if entry is not None and entry[0] == n:
                out[name] = entry[1]
            else:
                missing.append(name)
        if missing:
            fetched = await read(missing, n, deadline=deadline)
            if len(cache) + len(fetched) > self.max_cached:
                cache.clear()
            for name, values in fetched.items():
                out[name] = values
                cache[name] = (n, values)
        return out

    def invalidate(self, items: Iterable[str], users: Iterable[str]) -> None:
        """Forget the session indexes of ``items`` and the recent lists of ``users``."""
        for item in items:
            self._index.pop(item, None)
        for user in users:
            self._items.pop(user, None)
