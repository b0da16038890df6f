"""What ``streamrec demo`` watches: lag, processed events, freshness, alerts; its cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from core import kafka_clients
from core.settings import Settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.demo.summary import Summary

__all__ = ["Probe", "delete_keys", "read_alerts"]

_FLOW_TOPICS = (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS)
CLIENT_ID = "streamrec-demo"


class Probe:
    """Lag (end offsets − applied offsets), processed counts and freshness, every ``tick``."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = Keyspace(settings.key_prefix)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._names = {settings.topic(t.value): t.value for t in _FLOW_TOPICS}

    async def start(self) -> None:
        infos = await kafka_admin.describe_topics(self._settings)
        self._partitions = [
            TopicPartition(info.name, p)
            for info in infos
            if info.name in self._names
            for p in range(info.partitions)
        ]
        consumer = kafka_clients.consumer(self._settings, client_id=CLIENT_ID)
        await asyncio.wait_for(consumer.start(), self._settings.network_timeout_s)
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        await kafka_clients.close(consumer, self._settings)

    async def applied(self) -> dict[tuple[str, int], int]:
        """Next offset to apply per (logical topic, partition), from the worker's Redis offsets."""
        raw = await asyncio.wait_for(
            self._redis.hgetall(self._keys.offsets), self._settings.network_timeout_s
        )
        out: dict[tuple[str, int], int] = {}
        for key, value in raw.items():
            text = key.decode() if isinstance(key, bytes) else str(key)
            topic, _, partition = text.rpartition("|")
            out[(topic, int(partition))] = int(value) + 1
        return out

    async def sample(self, summary: Summary) -> None:
        timeout = self._settings.network_timeout_s
        applied = await self.applied()
        summary.processed = sum(applied.values())
        meta = await asyncio.wait_for(self._redis.hgetall(self._keys.meta), timeout)
        now = time.time()
        newest, last_write = meta.get(b"newest_event"), meta.get(b"last_write")
        if newest is not None and summary.produced:
            summary.freshness_s.append(max(0.0, now - float(newest)))
        if last_write is not None:
            summary.last_write_age_s = max(0.0, now - float(last_write))
        if self._consumer is not None and self._partitions:
            ends = await asyncio.wait_for(self._consumer.end_offsets(self._partitions), timeout)
            summary.lag = sum(
                max(0, int(end) - applied.get((self._names[tp.topic], tp.partition), 0))
                for tp, end in ends.items()
            )


async def read_alerts(settings: Settings) -> list[str]:
    """Kinds of the ``firing`` alert events on the run's alerts topic."""
    consumer = kafka_clients.consumer(
        settings,
        settings.topic(Topic.ALERTS.value),
        client_id=CLIENT_ID,
        auto_offset_reset="earliest",
        group_id=None,
    )
    timeout = settings.network_timeout_s
    kinds: list[str] = []
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        tps = list(consumer.assignment()) or [TopicPartition(settings.topic("alerts"), 0)]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        remaining = sum(int(v) for v in ends.values())
        deadline = time.monotonic() + timeout
        while remaining > 0 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    remaining -= 1
                    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                        event = orjson.loads(record.value or b"{}")
                        if event.get("state") == "firing":
                            kinds.append(f"{event.get('kind')}/{event.get('severity')}")
    finally:
        await kafka_clients.close(consumer, settings)
    return kinds


async def delete_keys(redis: Redis, prefix: str, timeout_s: float) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=Keyspace(prefix).pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await asyncio.wait_for(redis.unlink(*batch), timeout_s))
            batch = []
    if batch:
        deleted += int(await asyncio.wait_for(redis.unlink(*batch), timeout_s))
    return deleted
