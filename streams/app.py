"""The faust app: a thin adapter from Kafka batches to :class:`streams.pipeline.BatchProcessor`.

One agent consumes the outcomes, exposures and items topics together, takes batches of up to
``batch_size`` events (waiting at most ``batch_within_s``), hands each batch to the processor
(one atomic Redis update per batch) and sends rejected messages to the dead-letter topic.
``create_app(settings, bare=True)`` builds the benchmark baseline: the same consumption, but
the agent only counts messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import faust
from redis.exceptions import RedisError

from schemas.events import DeadLetter, encode_event
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.errors import UnavailableError
from streamrec.settings import Settings
from streams.pipeline import BatchProcessor, BatchResult, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig
from streams.state_store import StateStore

log = logging.getLogger(__name__)

CONSUMED: tuple[Topic, ...] = (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS)
BatchObserver = Callable[[BatchResult, float], None]


def _faust_app(settings: Settings, app_id: str) -> faust.App:
    datadir = settings.home / "faust" / app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    return faust.App(
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
        stream_buffer_maxsize=max(4 * settings.batch_size, 4096),
        broker_request_timeout=90.0,
        broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0,
        producer_linger=0.005,
        autodiscover=False,
        logging_config=None,
    )


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
    channel = app.topic(*logical, value_serializer="raw", key_serializer="raw")
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

    async def process_with_retry(
        processor: BatchProcessor, messages: list[RawMessage]
    ) -> BatchResult:
        """Retry a batch while Redis is unreachable: the batch is not acked until applied."""
        delay = 0.1
        while True:
            try:
                return await processor.process(messages, now=time.time())
            except (RedisError, OSError, TimeoutError, UnavailableError) as exc:
                log.warning("state update failed (%s); retrying in %.1f s", exc, delay)
                processor.on_rebalance()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @app.agent(channel, name="process")
    async def process(stream: Any) -> None:
        store = await StateStore.connect(
            settings.redis_url, keys, timeout_s=settings.network_timeout_s, attempts=30
        )
        processor = BatchProcessor(
            store,
            planner,
            send_dead_letters,
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            cache_users=settings.recent_cache_users,
        )
        state["store"], state["processor"] = store, processor
        try:
            # noack_take + ack after the batch is applied: faust's take_events acks the buffer
            # in a `finally`, so a worker stopped mid-batch would commit offsets of events it
            # never applied and the next owner would skip them.
            async for events in stream.noack_take(settings.batch_size, settings.batch_within_s):
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
                started = time.monotonic()
                result = await process_with_retry(processor, messages)
                result.roundtrips = processor.last_roundtrips
                for event in events:
                    await stream.ack(event)
                counts["messages"] += len(messages)
                counts["roundtrips"] += result.roundtrips
                if observer is not None:
                    observer(result, time.monotonic() - started)
        finally:
            await store.aclose()

    return app
