"""Resumable replay: events produced in Kafka transactions, each committed with a checkpoint.

``streamrec replay`` produces a list of events (its *positions* 0 … n-1, in replay order) in
transactions of at most ``replay_transaction_events`` events (or ``_TRANSACTION_S`` seconds,
whichever comes first). Each transaction also commits the replay's :class:`Checkpoint` — the
position of the first event not yet committed — as the offset of a consumer group of its own
(``send_offsets_to_transaction``), so the checkpoint and the records are committed atomically:
whatever the broker did, the checkpoint names exactly the events that readers can see.

Why this gives each event exactly once, to readers that read committed records only (the
worker, see ``streams.faust_tuning``, and every consumer of ``core.kafka_clients``):

* records of a transaction that was not committed are aborted, never shown to those readers;
* a transaction whose outcome is unknown (the broker went away during the commit) is settled
  by the next producer with the same transactional id: starting it fences the old one and
  ends its open transaction (aborted, or committed if the commit was already decided) before
  it may send, and the checkpoint read then says which one happened;
* the idempotent producer keeps a transaction's own retried requests from being written twice.

A failed transaction (any retriable broker error, or a bound passed) is retried by
:func:`core.retry.retry` with backoff, bounded by ``replay_retry_attempts`` and
``replay_retry_deadline_s``: the producer is dropped, a new one started, the checkpoint read,
and the events from there on are sent again. Past the bounds :class:`ReplayGaveUp` names the
first position not known to be committed; a later run started there (``resume=True``) first
reads the checkpoint, so a commit that did happen after all is not sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    KafkaUnavailableError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import OffsetAndMetadata

from core import kafka_clients
from core.errors import StreamrecError, UnavailableError
from core.retry import is_retriable, retry
from core.settings import Settings
from messaging.producer import RateLimiter, message_key
from schemas.events import Outcome, encode_event
from schemas.topics import Topic

__all__ = [
    "Checkpoint",
    "KafkaTransactions",
    "ReplayGaveUp",
    "ReplayReport",
    "TransactionalReplay",
    "Transactions",
    "replay_id",
    "resume_position",
]

CLIENT_ID = "streamrec-replay"
#: a transaction is committed after this long even if not full (a paced replay stays visible,
#: and no transaction comes near the broker's transaction timeout)
_TRANSACTION_S = 1.0
_CHECKPOINT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What one replay run committed: positions ``start`` … ``next - 1`` are in the topic."""

    run: str
    start: int
    next: int

    def encode(self) -> str:
        """The offset metadata stored with the checkpoint (short JSON)."""
        return json.dumps(
            {"v": _CHECKPOINT_VERSION, "run": self.run, "start": self.start, "next": self.next},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, metadata: str | None) -> Checkpoint | None:
        """The checkpoint of ``metadata``; None for anything else (not ours, or garbled)."""
        try:
            data = json.loads(metadata or "")
            if data.get("v") != _CHECKPOINT_VERSION:
                return None
            checkpoint = cls(run=str(data["run"]), start=int(data["start"]), next=int(data["next"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return checkpoint if 0 <= checkpoint.start <= checkpoint.next else None


def resume_position(checkpoint: Checkpoint | None, requested: int) -> int:
    """Where a replay resumed at position ``requested`` starts: past what the last run of the
    same replay committed beyond it (its last commit may have succeeded after it gave up)."""
    if checkpoint is not None and checkpoint.start <= requested < checkpoint.next:
        return checkpoint.next
    return requested


def replay_id(settings: Settings, fingerprint: str) -> str:
    """Transactional id and checkpoint group of the replay of one input to the outcomes topic.

    The same input replayed again (or resumed) gets the same id, so its producer fences an
    older one of the same replay and finds its checkpoint.
    """
    digest = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:16]
    return f"{CLIENT_ID}.{settings.topic(Topic.OUTCOMES.value)}.{digest}"


class ReplayGaveUp(StreamrecError):
    """Retries of a transaction ran out (or the error was not retriable); ``position`` is the
    first event not known to be committed: resume there."""

    def __init__(self, position: int, attempts: int, elapsed_s: float, cause: BaseException):
        self.position = position
        self.attempts = attempts
        self.elapsed_s = elapsed_s
        self.cause = cause
        plural = "s" if attempts != 1 else ""
        name, text = type(cause).__name__, str(cause)
        why = text if text.startswith(name) else f"{name}: {text}"  # aiokafka's name themselves
        super().__init__(f"gave up after {attempts} attempt{plural} in {elapsed_s:.0f} s ({why})")


class Transactions(Protocol):
    """A started transactional producer of one replay (:class:`KafkaTransactions`; tests use
    a fake). Any method may raise; the replay then closes it and starts a new one."""

    async def checkpoint(self) -> Checkpoint | None: ...

    async def begin(self) -> None: ...

    async def send(self, key: bytes, value: bytes) -> None: ...

    async def commit(self, checkpoint: Checkpoint) -> None: ...

    async def close(self) -> None: ...


class KafkaTransactions:
    """:class:`Transactions` on aiokafka: a transactional producer and an admin client.

    Every wait is bounded (``3 × network_timeout_s``, as the other producers); :meth:`commit`
    waits for every record of the transaction to be acknowledged before committing it, so a
    committed transaction never misses a record that failed.
    """

    def __init__(self, settings: Settings, transactional_id: str) -> None:
        self._settings = settings
        self._id = transactional_id
        self._topic = settings.topic(Topic.OUTCOMES.value)
        self._tp = TopicPartition(self._topic, 0)  # where the checkpoint offset is stored
        self._timeout = settings.network_timeout_s * 3
        self._producer: Any = None
        self._admin: Any = None
        self._pending: list[asyncio.Future[Any]] = []

    @classmethod
    async def connect(cls, settings: Settings, transactional_id: str) -> KafkaTransactions:
        """Start one: the producer's start fences an older producer of ``transactional_id``
        and ends its open transaction before returning."""
        session = cls(settings, transactional_id)
        try:
            await session._start()
        except BaseException:
            await session.close()
            raise
        return session

    async def _start(self) -> None:
        self._producer = kafka_clients.producer(
            self._settings,
            client_id=CLIENT_ID,
            request_timeout_s=self._timeout,
            transactional_id=self._id,
            enable_idempotence=True,
            acks="all",
            linger_ms=10,
            max_batch_size=256 * 1024,
            max_request_size=max(256 * 1024, self._settings.max_event_bytes * 2),
        )
        self._admin = kafka_clients.admin(self._settings, client_id=CLIENT_ID)
        async with self._bound("connect"):
            await self._producer.start()
            await self._admin.start()

    def _bound(self, what: str) -> _Bound:
        return _Bound(self._timeout, f"Kafka at {self._settings.kafka_bootstrap}: {what}")

    async def checkpoint(self) -> Checkpoint | None:
        async with self._bound("read the replay checkpoint"):
            offsets = await self._admin.list_consumer_group_offsets(self._id, partitions=[self._tp])
        stored = offsets.get(self._tp)
        return None if stored is None or stored.offset < 0 else Checkpoint.decode(stored.metadata)

    async def begin(self) -> None:
        async with self._bound("begin a transaction"):
            await self._producer.begin_transaction()
        self._pending = []

    async def send(self, key: bytes, value: bytes) -> None:
        # aiokafka bounds the wait for buffer space itself (request_timeout_ms)
        future = await self._producer.send(self._topic, value=value, key=key)
        self._pending.append(future)

    async def commit(self, checkpoint: Checkpoint) -> None:
        pending, self._pending = self._pending, []
        async with self._bound("acknowledge a transaction's records"):
            results = await asyncio.gather(*pending, return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        offsets = {self._tp: OffsetAndMetadata(checkpoint.next, checkpoint.encode())}
        async with self._bound("commit a transaction"):
            await self._producer.send_offsets_to_transaction(offsets, self._id)
            await self._producer.commit_transaction()

    async def close(self) -> None:
        """Stop both clients within a bound (an open transaction is left to the next
        producer of this id, or to the broker's transaction timeout)."""
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        for future in self._pending:  # their errors are the ones already raised, or moot
            future.add_done_callback(_retrieve)
        self._pending = []
        await kafka_clients.close(producer, self._settings)
        await kafka_clients.close(admin, self._settings)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Bound:
    """``async with``: a timeout that raises :class:`UnavailableError` naming the step."""

    def __init__(self, seconds: float, what: str) -> None:
        self._timeout = asyncio.timeout(seconds)
        self._seconds = seconds
        self._what = what

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as timeout:
            raise UnavailableError(
                f"{self._what}: no answer within {self._seconds:g} s"
            ) from timeout


#: broker errors after which a new producer may simply try again (beyond ``is_retriable``):
#: a batch that expired or metadata that did not come (the broker away), a sequence broken
#: by a broker restart
_RETRY_ALSO = (KafkaTimeoutError, KafkaUnavailableError, OutOfOrderSequenceNumber)
#: errors that another attempt cannot fix: another replay of the same input took over, or
#: the broker refuses this transactional id
_NEVER_RETRY = (ProducerFenced, TransactionalIdAuthorizationFailed)


def _retriable(error: BaseException) -> bool:
    if isinstance(error, _NEVER_RETRY):
        return False
    return is_retriable(error) or isinstance(error, _RETRY_ALSO)


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a run did: asked to start at ``requested``, started at ``started`` (later if the
    checkpoint showed more committed), committed up to ``committed`` (exclusive)."""

    requested: int
    started: int
    committed: int
    transactions: int
    retries: int


class TransactionalReplay:
    """Produces ``events[start:]`` to the outcomes topic in committed transactions.

    ``connect`` starts a :class:`Transactions` (default: :meth:`KafkaTransactions.connect`
    with :func:`replay_id` of ``fingerprint``); ``on_progress(n)`` is told of every ``n``
    newly committed events.
    """

    def __init__(
        self,
        settings: Settings,
        events: Sequence[Outcome],
        *,
        fingerprint: str,
        rate: float | None = None,
        on_progress: Callable[[int], None] | None = None,
        connect: Callable[[], Awaitable[Transactions]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._events = events
        self._id = replay_id(settings, fingerprint)
        self._connect = connect or (lambda: KafkaTransactions.connect(settings, self._id))
        self._limiter = RateLimiter(rate) if rate else None
        self.on_progress = on_progress
        self._sleep = sleep
        self._run = uuid.uuid4().hex[:12]
        self._session: Transactions | None = None
        self._start = 0
        self.committed = 0
        self._transactions = 0
        self._retries = 0

    async def run(self, start: int = 0, *, resume: bool = False) -> ReplayReport:
        """Commit ``events[start:]``; with ``resume``, skip what the checkpoint of an earlier
        run shows committed past ``start``. Raise :class:`ReplayGaveUp` past the bounds."""
        if not 0 <= start <= len(self._events):
            raise ValueError(f"start {start} is outside 0 … {len(self._events)}")
        self._start = self.committed = start
        try:
            if resume:
                await self._attempts(self._resume, f"checkpoint read (position {start})")
            while self.committed < len(self._events):
                await self._attempts(self._transaction, f"replay transaction from {self.committed}")
        finally:
            await self._drop()
        return ReplayReport(start, self._start, self.committed, self._transactions, self._retries)

    async def _attempts(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        cfg = self._settings
        attempts = 0
        started = time.monotonic()

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            await step()

        async def on_retry(_: BaseException) -> None:
            self._retries += 1
            await self._drop()

        try:
            await retry(
                attempt,
                what=what,
                attempts=cfg.replay_retry_attempts,
                deadline_s=cfg.replay_retry_deadline_s,
                initial_s=0.5,
                max_s=cfg.replay_retry_max_s,
                retry_on=_retriable,
                on_retry=on_retry,
                sleep=self._sleep,
            )
        except (KafkaError, StreamrecError, OSError, TimeoutError) as exc:
            raise ReplayGaveUp(self.committed, attempts, time.monotonic() - started, exc) from exc

    async def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _open(self) -> tuple[Transactions, Checkpoint | None]:
        """Start a producer (fencing any older one of this replay) and read the checkpoint."""
        session = self._session = await self._connect()
        return session, await session.checkpoint()

    async def _ready(self) -> Transactions:
        """The started producer; a new one learns from the checkpoint what this run has
        committed (the outcome of a commit that failed is known only now)."""
        if self._session is not None:
            return self._session
        session, checkpoint = await self._open()
        if checkpoint is not None and checkpoint.run == self._run:
            self._advance(checkpoint.next)
        return session

    async def _resume(self) -> None:
        _, checkpoint = await self._open()
        self._start = self.committed = resume_position(checkpoint, self._start)

    async def _transaction(self) -> None:
        session = await self._ready()
        position, end = self.committed, len(self._events)
        if position >= end:
            return  # the commit that failed had gone through
        end = min(end, position + self._settings.replay_transaction_events)
        await session.begin()
        deadline = time.monotonic() + _TRANSACTION_S
        topic = Topic.OUTCOMES
        while position < end:
            if self._limiter is not None:
                await self._limiter.acquire()
            event = self._events[position]
            await session.send(message_key(topic, event), encode_event(event))
            position += 1
            if time.monotonic() >= deadline:
                break
        await session.commit(Checkpoint(self._run, self._start, position))
        self._transactions += 1
        self._advance(position)

    def _advance(self, position: int) -> None:
        if position > self.committed:
            gained, self.committed = position - self.committed, position
            if self.on_progress is not None:
                self.on_progress(gained)
