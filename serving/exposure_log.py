"""Exposure logging: every answer becomes an ``exposure.v1`` event on the exposures topic.

``ExposureLog.log()`` is synchronous and O(1): it appends to a bounded in-process buffer and
returns; a background task builds the events and produces them with aiokafka (key = user_id,
acks=all, idempotent producer). While Kafka is away events wait in the buffer; when it is full
the OLDEST event is dropped and counted (``streamrec_exposure_dropped_total``): the newest
exposures are the ones whose outcomes can still join. Delivery is at-least-once: a batch
whose acknowledgement timed out is sent again. ``stop()`` flushes within a grace period and
counts what it could not send as dropped.

Cost. The sender gathers exposures for ``linger_s`` (setting ``exposure_linger_ms``), then
writes them into one record batch per partition (the producer's default partitioner on the
user key, so a user's exposures stay in order on one partition) and hands each batch to the
producer whole: one Kafka request per partition per round instead of a future, a partition
lookup and a send per event (about half the CPU per exposure; figures in docs/benchmarks.md).

The exposure's ``user_id`` is the request's user_id, else its session_id (then
``context.extra["session_id"]`` says so), else ``"anonymous"`` (SimilarItems without a viewer).
``context.extra`` carries the flags of ``schemas.controls``: ``fallback_stage`` (none /
segment_popularity / global_popularity / last_known / kill_switch), ``degraded`` ("1" when
Redis could not be read), ``error`` (an ``AnswerError``: ``state_unavailable`` for a degraded
answer, ``no_state`` / ``internal`` for a failed call) and ``empty`` ("1" when no item was
served: failed calls are logged too, with no items). Each item carries its reasons and the ids
of the pin / boost rules that touched it (:mod:`serving.decisions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from core import kafka_clients
from core.retry import retry
from core.settings import Settings
from schemas.controls import EXTRA_ALLOCATION, EXTRA_FALLBACK_STAGE, EXTRA_SESSION_ID
from schemas.events import EXPLORING_REASON, Context, ExposedItem, Exposure, encode_event
from schemas.rules import Rule
from schemas.topics import Topic
from serving import metrics
from serving.decisions import answer_flags, rule_hits

log = logging.getLogger("streamrec.serving.exposures")
BATCH_MAX = 500
BACKOFF_MAX_S = 5.0
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class PendingExposure:
    """What the request path hands over; turned into an :class:`Exposure` off the hot path."""

    request_id: str
    user_id: str | None
    session_id: str | None
    ts: float
    items: Sequence[tuple[str, float]]
    context: Context
    variant: str
    algo_version: str
    latency_ms: float
    stage: str
    degraded: bool
    reasons: Sequence[Sequence[str]] = ()
    """Per item (same order as ``items``); empty = not known."""
    rules: Sequence[Rule] = ()
    """The rules the ranking saw."""
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    error: str = ""
    """An ``AnswerError`` value when the call failed (then ``items`` is empty)."""
    method: str = "Recommend"
    allocation: str = "fixed"
    """The experiment's allocation mode; ``bandit`` is written to ``context.extra``."""

    def rule_hits(self) -> tuple[list[list[str]], list[str]]:
        return rule_hits(
            [item for item, _ in self.items],
            self.rules,
            self.categories,
            now=self.ts,
            tenant=self.context.tenant,
            surface=self.context.surface,
        )

    def flags(self) -> dict[str, str]:
        return answer_flags(items=len(self.items), degraded=self.degraded, error=self.error)


def build_exposure(p: PendingExposure) -> Exposure:
    """The ``exposure.v1`` event of one answer (ranks 1..n in answer order)."""
    extra = dict(p.context.extra)
    extra[EXTRA_FALLBACK_STAGE] = p.stage
    extra.update(p.flags())
    if p.allocation != "fixed":
        extra[EXTRA_ALLOCATION] = p.allocation
    user = p.user_id or p.session_id or ANONYMOUS
    if not p.user_id and p.session_id:
        extra[EXTRA_SESSION_ID] = p.session_id
    hits, _active = p.rule_hits()
    reasons = p.reasons if len(p.reasons) == len(p.items) else [()] * len(p.items)
    context = Context(
        tenant=p.context.tenant, surface=p.context.surface, locale=p.context.locale, extra=extra
    )
    return Exposure(
        request_id=p.request_id,
        user_id=user,
        ts=p.ts,  # type: ignore[arg-type]  # epoch seconds, parsed by the Timestamp validator
        items=[
            ExposedItem(
                item_id=item,
                rank=rank,
                score=score,
                reasons=list(why)[:16] or None,
                rules=hit[:32] or None,
                exploring=True if EXPLORING_REASON in why else None,
            )
            for rank, ((item, score), why, hit) in enumerate(
                zip(p.items, reasons, hits, strict=True), start=1
            )
        ],
        context=context,
        variant=p.variant,
        algo_version=p.algo_version,
        latency_ms=max(0.0, p.latency_ms),
    )


ProducerFactory = Callable[[], Any]


def _append(builder: Any, key: bytes, value: bytes) -> bool:
    """Add a record to an aiokafka ``BatchBuilder``; False when the batch is full."""
    return builder.append(timestamp=None, key=key, value=value) is not None


class ExposureLog:
    """Bounded buffer + background producer of exposure events."""

    def __init__(
        self,
        *,
        topic: str,
        capacity: int,
        producer_factory: ProducerFactory,
        ack_timeout_s: float = 10.0,
        linger_s: float = 0.0,
    ) -> None:
        self.topic = topic
        self.capacity = capacity
        self._factory = producer_factory
        self._ack_timeout_s = ack_timeout_s
        self._linger_s = linger_s
        self._partitioner = DefaultPartitioner()
        self._buffer: deque[PendingExposure] = deque()
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._producer: Any = None
        self.sent = 0
        self.dropped = 0
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ExposureLog:

        def factory() -> AIOKafkaProducer:
            return kafka_clients.producer(
                settings,
                client_id="streamrec-serving",
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
            )

        return cls(
            topic=settings.topic(Topic.EXPOSURES.value),
            capacity=settings.exposure_buffer_size,
            producer_factory=factory,
            ack_timeout_s=2 * settings.network_timeout_s,
            linger_s=settings.exposure_linger_ms / 1000.0,
        )

    @property
    def depth(self) -> int:
        """Events not yet acknowledged by Kafka (buffered + in flight)."""
        return len(self._buffer) + self._in_flight

    def log(self, pending: PendingExposure) -> None:
        """Queue one exposure; never blocks, never raises. Full buffer → oldest dropped."""
        if len(self._buffer) >= self.capacity:
            self._buffer.popleft()
            self._drop(1)
        self._buffer.append(pending)
        metrics.EXPOSURE_BUFFER_DEPTH.set(self.depth)
        self._drained.clear()
        self._wake.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        metrics.EXPOSURE_DROPPED.inc(n)

    def _requeue(self, batch: list[PendingExposure]) -> None:
        room = self.capacity - len(self._buffer)
        keep = batch[len(batch) - max(room, 0) :] if room < len(batch) else batch
        if len(keep) < len(batch):
            self._drop(len(batch) - len(keep))
        self._buffer.extendleft(reversed(keep))

    # --- background sender ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start the sender task (the producer connects lazily, retrying). Idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streamrec-exposures")

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            # while Kafka is away: the batch is back in the buffer, the producer reconnects
            await retry(
                self._send_buffered,
                what="exposure producer",
                attempts=None,
                initial_s=0.1,
                max_s=BACKOFF_MAX_S,
                retry_on=(KafkaError, OSError, TimeoutError),
                on_retry=self._on_send_failure,
                logger=log,
            )

    async def _send_buffered(self) -> None:
        if self._buffer:  # a failed batch whose exposures were all invalid left nothing
            await self._send_batch()

    async def _on_send_failure(self, _error: BaseException) -> None:
        self.failures += 1
        await self._close_producer()

    async def _ensure_producer(self) -> Any:
        if self._producer is None:
            producer = self._factory()
            try:
                async with asyncio.timeout(self._ack_timeout_s):
                    await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), self._ack_timeout_s)
                raise
            self._producer = producer
        return self._producer

    async def _send_batch(self) -> None:
        producer = await self._ensure_producer()
        if self._linger_s > 0 and len(self._buffer) < BATCH_MAX:
            await asyncio.sleep(self._linger_s)  # gather: one Kafka request per partition
        batch = [self._buffer.popleft() for _ in range(min(BATCH_MAX, len(self._buffer)))]
        self._in_flight = len(batch)
        kept = list(batch)  # all but the invalid ones, in order
        submitted: list[tuple[asyncio.Future[Any], list[PendingExposure]]] = []
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                partitions = sorted(await producer.partitions_for(self.topic))
                if not partitions:
                    raise KafkaError(f"no partition known for {self.topic}")
                building: dict[int, tuple[Any, list[PendingExposure]]] = {}
                for pending in batch:
                    record = self._record(pending)
                    if record is None:
                        kept.remove(pending)
                        continue
                    key, value = record
                    partition = self._partitioner(key, partitions, partitions)
                    entry = building.get(partition)
                    if entry is not None and not _append(entry[0], key, value):
                        # full: on its way, and a new batch for the rest
                        future = await producer.send_batch(
                            entry[0], self.topic, partition=partition
                        )
                        submitted.append((future, entry[1]))
                        entry = None
                    if entry is None:
                        entry = building[partition] = (producer.create_batch(), [])
                        _append(entry[0], key, value)  # a batch takes its first record whole
                    entry[1].append(pending)
                for partition, (builder, members) in building.items():
                    builder.close()
                    future = await producer.send_batch(builder, self.topic, partition=partition)
                    submitted.append((future, members))
                results = await asyncio.gather(*(f for f, _ in submitted), return_exceptions=True)
        except BaseException:
            for future, _ in submitted:
                future.cancel()
            self._requeue(kept)  # none is known delivered: at least once
            raise
        finally:
            self._in_flight = 0
            metrics.EXPOSURE_BUFFER_DEPTH.set(self.depth)
        failed_ids = {
            id(p)
            for (_, members), result in zip(submitted, results, strict=True)
            if isinstance(result, BaseException)
            for p in members
        }
        self.sent += len(kept) - len(failed_ids)
        if failed_ids:
            self._requeue([p for p in kept if id(p) in failed_ids])  # in their order
            first = next(r for r in results if isinstance(r, BaseException))
            raise KafkaError(f"{len(failed_ids)} exposure sends failed: {first!r}")

    def _record(self, pending: PendingExposure) -> tuple[bytes, bytes] | None:
        """``(key, value)`` of one exposure; None (dropped, counted) if it fails its contract."""
        try:
            event = build_exposure(pending)
        except ValidationError as exc:
            log.error("dropping invalid exposure %s: %s", pending.request_id, exc)
            self._drop(1)
            return None
        return event.user_id.encode(), encode_event(event)

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), self._ack_timeout_s)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Flush what can be sent within ``grace_s``, stop the producer; count the rest."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._drained.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.shield(self._close_producer())
        if self._buffer:
            log.warning("shutdown: %d exposure events not sent", len(self._buffer))
            self._drop(len(self._buffer))
            self._buffer.clear()
        metrics.EXPOSURE_BUFFER_DEPTH.set(self.depth)
