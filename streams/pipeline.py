"""The batch pipeline shared by the worker, the benchmark and the evaluator.

``decode → drop what is already applied → dead-letter the bad → plan → apply atomically``.
It knows nothing of faust: the worker's agent hands it raw messages and a dead-letter sink.
Exactly-once state: the stored offset of every (topic, partition) moves in the same atomic
Redis update as the state, and messages at or below it are skipped, so a batch delivered
twice (crash, rebalance) is counted once. Dead letters are sent before the state update; a
crash between the two re-sends them (at-least-once on the dead-letter topic, identified by
their source coordinates).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from schemas.events import DeadLetter, Outcome
from schemas.ids import Pseudonyms
from schemas.topics import Topic
from streams.decode import Rejected, dead_letter, decode
from streams.processor import BatchPlanner, Record
from streams.state_store import StateStore

MAX_APPLY_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One Kafka message as consumed: logical topic, coordinates, key and value bytes."""

    topic: Topic
    topic_name: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class BatchResult:
    """What one batch did, for metrics and monitors."""

    received: int = 0
    duplicates: int = 0
    applied: Counter[str] = field(default_factory=Counter)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    joined: int = 0
    pending: int = 0
    conflicts: int = 0
    roundtrips: int = 0


class RecentCache:
    """LRU of users' recent items (newest first), valid while this process owns their partition.

    The worker is the only writer of a user's history while it owns the user's partition, so
    the history it planned with is exactly what Redis holds after a successful apply. The
    cache is cleared on any rebalance and on any apply conflict (someone else wrote).
    """

    def __init__(self, max_users: int, depth: int) -> None:
        self.max_users = max_users
        self.depth = depth
        self._data: OrderedDict[str, list[tuple[float, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get_many(
        self, users: Sequence[str]
    ) -> tuple[dict[str, list[tuple[float, str]]], list[str]]:
        hits: dict[str, list[tuple[float, str]]] = {}
        misses: list[str] = []
        for user in dict.fromkeys(users):
            entry = self._data.get(user)
            if entry is None:
                misses.append(user)
            else:
                self._data.move_to_end(user)
                hits[user] = entry
        return hits, misses

    def update(self, histories: dict[str, list[tuple[float, str]]]) -> None:
        if self.max_users <= 0:
            return
        for user, items in histories.items():
            self._data[user] = items[: self.depth]
            self._data.move_to_end(user)
        while len(self._data) > self.max_users:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


DeadLetterSink = Callable[[Sequence[tuple[bytes | None, DeadLetter]]], Awaitable[None]]
#: a message with its decoded record, or why it was rejected
Decoded = tuple[RawMessage, Record | Rejected]


class BatchProcessor:
    """Processes one batch of raw messages into one atomic state update."""

    def __init__(
        self,
        store: StateStore,
        planner: BatchPlanner,
        dead_letter_sink: DeadLetterSink,
        *,
        max_event_bytes: int,
        max_future_skew_s: float,
        cache_users: int = 50_000,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.store = store
        self.pseudonyms = pseudonyms  # pii_policy of user / session ids; None = unchecked
        self.planner = planner
        self.dead_letter_sink = dead_letter_sink
        self.max_event_bytes = max_event_bytes
        self.max_future_skew_s = max_future_skew_s
        # read and cache exactly the history the planner looks at (see history_depth)
        self.cache = RecentCache(cache_users, planner.depth)
        self.last_roundtrips = 0

    def on_rebalance(self) -> None:
        """Partitions moved: another worker may have written our users' histories."""
        self.cache.clear()

    async def process(self, messages: Sequence[RawMessage], *, now: float) -> BatchResult:
        """Decode and apply one batch: :meth:`decode_batch`, then :meth:`process_decoded`."""
        return await self.process_decoded(self.decode_batch(messages, now=now), now=now)

    def decode_batch(self, messages: Sequence[RawMessage], *, now: float) -> list[Decoded]:
        """Each message with its record or why it is rejected (pure: no state, no I/O).

        The worker decodes a batch as it takes it, so decoding overlaps the previous batch's
        Redis round trips instead of adding to them.
        """
        decoded: list[Decoded] = []
        for msg in messages:
            event = decode(
                msg.value,
                msg.topic,
                max_bytes=self.max_event_bytes,
                max_future_skew_s=self.max_future_skew_s,
                now=now,
                pseudonyms=self.pseudonyms,
            )
            if isinstance(event, Rejected):
                decoded.append((msg, event))
            else:
                decoded.append((msg, Record(msg.topic, msg.partition, msg.offset, event)))
        return decoded

    async def process_decoded(self, decoded: Sequence[Decoded], *, now: float) -> BatchResult:
        """Apply one decoded batch (see :meth:`decode_batch`) in one atomic state update."""
        before = self.store.roundtrips
        try:
            return await self._process(list(decoded), now=now)
        finally:
            self.last_roundtrips = self.store.roundtrips - before

    async def _process(self, decoded: list[Decoded], *, now: float) -> BatchResult:
        result = BatchResult(received=len(decoded))
        stored: dict[str, int] | None = None
        for _attempt in range(MAX_APPLY_ATTEMPTS):
            cached, misses = self.cache.get_many(_users(decoded))
            state = await self.store.read(
                misses,
                _items(decoded),
                sorted({_field(self.store, m) for m, _ in decoded}),
                self.cache.depth,
            )
            state.recent.update(cached)
            stored = state.offsets if stored is None else {**stored, **state.offsets}
            fresh = [(m, d) for m, d in decoded if m.offset > stored.get(_field(self.store, m), -1)]
            result.duplicates = len(decoded) - len(fresh)
            if result.duplicates:
                # Messages already applied by someone else: another worker owns, or owned,
                # some of these partitions and may have moved any cached history on.
                self.cache.clear()
                if cached and fresh:
                    continue  # plan from histories read now, not from the cache
            if not fresh:
                return result
            letters = [
                (
                    m.key,
                    dead_letter(
                        m.value,
                        d,
                        source_topic=m.topic_name,
                        partition=m.partition,
                        offset=m.offset,
                        max_bytes=self.max_event_bytes,
                        now=now,
                    ),
                )
                for m, d in fresh
                if isinstance(d, Rejected)
            ]
            records = [d for _, d in fresh if isinstance(d, Record)]
            plan = self.planner.plan(
                records, recent=state.recent, categories=state.categories, t0=state.t0
            )
            plan.offsets = _offsets(self.store, [m for m, _ in fresh])
            if letters:
                await self.dead_letter_sink(letters)
                decoded = [(m, d) for m, d in decoded if not isinstance(d, Rejected)]
                result.dead_letters.extend(env for _, env in letters)
            applied = await self.store.apply(plan, now=now)
            if applied.applied:
                if result.duplicates or result.conflicts:
                    # Another worker wrote these partitions (a rebalance overlap): it may
                    # keep writing them, so nothing we read can be trusted to stay current.
                    self.cache.clear()
                else:
                    self.cache.update(plan.histories)
                result.records = records
                result.applied.update(r.topic.value for r in records)
                result.joined, result.pending = applied.joined, applied.pending
                return result
            result.conflicts += 1
            self.cache.clear()
            if applied.conflict_field is not None and applied.conflict_offset is not None:
                stored[applied.conflict_field] = applied.conflict_offset
        raise RuntimeError(f"batch not applied after {MAX_APPLY_ATTEMPTS} conflicting attempts")


_FIELDS: dict[tuple[str, Topic, int], str] = {}


def _field(store: StateStore, msg: RawMessage) -> str:
    """``topic|partition`` field of the offsets hash (memoised: called per message)."""
    key = (store.keys.prefix, msg.topic, msg.partition)
    name = _FIELDS.get(key)
    if name is None:
        name = _FIELDS[key] = store.keys.offset_field(msg.topic.value, msg.partition)
    return name


def _offsets(store: StateStore, messages: Sequence[RawMessage]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for msg in messages:
        name = _field(store, msg)
        first, last = out.get(name, (msg.offset, msg.offset))
        out[name] = (min(first, msg.offset), max(last, msg.offset))
    return out


def _users(decoded: Sequence[Decoded]) -> list[str]:
    return [
        d.event.user_id
        for _, d in decoded
        if isinstance(d, Record) and isinstance(d.event, Outcome)
    ]


def _items(decoded: Sequence[Decoded]) -> list[str]:
    return [
        d.event.item_id
        for _, d in decoded
        if isinstance(d, Record) and isinstance(d.event, Outcome)
    ]
