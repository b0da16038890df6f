"""The faust app: a thin adapter from Kafka batches to :class:`streams.pipeline.BatchProcessor`.

One agent consumes the outcomes, exposures and items topics together, takes batches of up to
``batch_size`` events (waiting at most ``batch_within_s``), decodes them, hands each batch to
the processor (one atomic Redis update per batch) and sends rejected messages to the
dead-letter topic. The batches are applied by a task of their own, one at a time and in
order, each acked once applied, while the agent goes on taking and decoding the next one:
faust's per-message work and the decoding overlap the batch's Redis round trips instead of
waiting for them. ``create_app(settings, bare=True)``
builds the benchmark baseline: the same consumption, but the agent only counts messages.
Both run on faust tuned by :mod:`streams.faust_tuning` (same behaviour, less per-message work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import faust
from redis.exceptions import RedisError

from core.errors import UnavailableError
from core.retry import retry
from core.settings import Settings
from schemas.events import DeadLetter, encode_event
from schemas.ids import Pseudonyms
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.faust_tuning import EagerDeliveryTransport, LeanMonitor, RawSchema
from streams.pipeline import BatchProcessor, BatchResult, Decoded, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig
from streams.state_store import StateStore

log = logging.getLogger(__name__)

CONSUMED: tuple[Topic, ...] = (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS)
BatchObserver = Callable[[BatchResult, float], None]


class TakenEvents:
    """Events the agent took from the stream (each with its decoded message), waiting to be
    applied (FIFO, about a batch).

    :meth:`put` waits while a full batch is already waiting, so the agent never runs more
    than a batch ahead of the applier; :meth:`get` waits for events and returns up to a
    batch of the oldest.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._events: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._space = asyncio.Event()

    async def put(self, events: Sequence[Any]) -> None:
        self._events.extend(events)
        self._ready.set()
        while len(self._events) >= self.batch_size:
            self._space.clear()
            await self._space.wait()

    async def get(self) -> list[Any]:
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        n = min(len(self._events), self.batch_size)
        batch = [self._events.popleft() for _ in range(n)]
        self._space.set()
        return batch


def _faust_app(settings: Settings, app_id: str) -> faust.App:
    datadir = settings.home / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    buffer = max(4 * settings.batch_size, 4096)
    app = faust.App(
        app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=buffer,
        # faust stops fetching a partition once the stream buffer passes 80 %, but still
        # delivers what the last poll returned: polls of an eighth of the buffer stay inside
        # the last 20 %, so a delivery never finds the buffer full (and never has to wait)
        broker_max_poll_records=buffer // 8,
        broker_request_timeout=90.0,
        broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0,
        producer_linger=0.005,
        autodiscover=False,
        logging_config=None,
        Monitor=LeanMonitor,
        # faust's opt-in fix of its Cython stream iterator: take an event already in the
        # stream's queue without awaiting it (what faust's pure-Python iterator always did)
        cython_optimizations=True,
    )
    # faust's aiokafka transport whose fetch loop delivers messages eagerly (faust_tuning)
    app.transport = EagerDeliveryTransport(app.conf.broker_consumer, app)
    return app


def create_app(
    settings: Settings,
    *,
    bare: bool = False,
    observer: BatchObserver | None = None,
    app_id: str | None = None,
) -> faust.App:
    """Build the worker app (or the bare counting baseline with ``bare=True``)."""
    app = _faust_app(settings, app_id or settings.consumer_group)
    logical = {settings.topic(t.value): t for t in CONSUMED}
    channel = app.topic(*logical, schema=RawSchema(value_serializer="raw", key_serializer="raw"))
    app.conf.streamrec_counts = {"messages": 0, "roundtrips": 0, "first_ts": 0.0}
    counts: dict[str, int] = app.conf.streamrec_counts

    if bare:

        @app.agent(channel, name="bare-count")
        async def count(stream: Any) -> None:
            async for events in stream.noack_take(settings.batch_size, settings.batch_within_s):
                counts["messages"] += len(events)
                for event in events:
                    await stream.ack(event)

        return app

    deadletters = app.topic(
        settings.topic(Topic.DEADLETTER.value), value_serializer="raw", key_serializer="raw"
    )
    keys = Keyspace(settings.key_prefix)
    planner = BatchPlanner(keys, ProcessorConfig.from_settings(settings))
    state: dict[str, Any] = {}

    async def send_dead_letters(letters: Sequence[tuple[bytes | None, DeadLetter]]) -> None:
        futures = [
            await deadletters.send(key=key, value=encode_event(envelope))
            for key, envelope in letters
        ]
        async with asyncio.timeout(settings.network_timeout_s * 6):
            await asyncio.gather(*futures)

    async def on_rebalance(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        processor = state.get("processor")
        if processor is not None:
            processor.on_rebalance()

    app.on_partitions_revoked.connect(on_rebalance)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_rebalance)  # type: ignore[arg-type]

    async def process_with_retry(processor: BatchProcessor, decoded: list[Decoded]) -> BatchResult:
        """Retry a batch while Redis is unreachable: the batch is not acked until applied."""
        return await retry(
            lambda: processor.process_decoded(decoded, now=time.time()),
            what="state update",
            attempts=None,  # for as long as it takes: the batch must not be skipped
            initial_s=0.1,
            max_s=5.0,
            retry_on=(RedisError, OSError, TimeoutError, UnavailableError),
            on_retry=lambda _: processor.on_rebalance(),  # cached histories may be stale
            logger=log,
        )

    @app.agent(channel, name="process")
    async def process(stream: Any) -> None:
        store = await StateStore.connect(
            settings.redis_url,
            keys,
            timeout_s=settings.network_timeout_s,
            attempts=30,
            script=settings.apply_script,
        )
        processor = BatchProcessor(
            store,
            planner,
            send_dead_letters,
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            cache_users=settings.recent_cache_users,
            pseudonyms=Pseudonyms.from_settings(settings),
        )
        state["store"], state["processor"] = store, processor
        taken = TakenEvents(settings.batch_size)

        def decode(events: Sequence[Any]) -> list[tuple[Any, Decoded]]:
            """The stream's events with their decoded messages (pure CPU work, no I/O)."""
            messages = [
                RawMessage(
                    topic=logical[e.message.topic],
                    topic_name=e.message.topic,
                    partition=e.message.partition,
                    offset=e.message.offset,
                    key=e.message.key,
                    value=e.message.value,
                )
                for e in events
            ]
            decoded = processor.decode_batch(messages, now=time.time())
            return list(zip(events, decoded, strict=True))

        async def apply_batches() -> None:
            """Apply what the agent took, in order, one batch at a time; ack after each."""
            while True:
                taken_batch = await taken.get()
                started = time.monotonic()
                result = await process_with_retry(processor, [d for _, d in taken_batch])
                result.roundtrips = processor.last_roundtrips
                for event, _ in taken_batch:
                    await stream.ack(event)
                counts["messages"] += len(taken_batch)
                counts["roundtrips"] += result.roundtrips
                if observer is not None:
                    observer(result, time.monotonic() - started)

        agent_task = asyncio.current_task()

        def applier_done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None and agent_task is not None:
                agent_task.cancel()  # wake the agent wherever it waits: it raises the error

        applier = asyncio.ensure_future(apply_batches())
        applier.add_done_callback(applier_done)
        try:
            # noack_take + ack after the batch is applied: faust's take_events acks the buffer
            # in a `finally`, so a worker stopped mid-batch would commit offsets of events it
            # never applied and the next owner would skip them. The applier works in its own
            # task, so the stream keeps taking (and faust keeps fetching) while a batch is in
            # Redis; what it took waits in `taken` (at most a batch) and forms the next batch.
            async for events in stream.noack_take(settings.batch_size, settings.batch_within_s):
                await taken.put(decode(events))
        except asyncio.CancelledError:
            if applier.done() and not applier.cancelled() and applier.exception() is not None:
                raise cast(BaseException, applier.exception()) from None
            raise
        finally:
            applier.remove_done_callback(applier_done)
            applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await applier
            await store.aclose()

    return app
