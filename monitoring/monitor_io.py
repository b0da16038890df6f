"""I/O of the monitors: Kafka offsets (consumer lag, end offsets) and the Redis monitor keys.

Shared by the worker's monitor task, ``streamrec monitor`` and ``streamrec status``; the
decisions (levels, alerts, drift) live in the pure modules (:mod:`monitoring.monitor`,
:mod:`monitoring.lag_monitor`, :mod:`monitoring.health`). Every network await has a timeout; an
unreachable broker or Redis raises :class:`~core.errors.UnavailableError`.

Redis keys written here (all through :class:`~schemas.keyspace.Keyspace`):

* ``stats:newest`` (zset) — logical topic → event time of the newest *processed* event,
  raised with ``ZADD GT`` by every worker each monitor interval (so several workers keep the
  maximum).
* ``stats:monitor:{role}:{instance}`` (string, TTL) — persisted monitor state (drift windows
  and open alerts) of one process, restored at its start.
* ``hb:{role}:{instance}`` (string, TTL = a few intervals) — heartbeat of a live worker
  (``role=worker``) or ``streamrec monitor`` (``role=monitor``), holding its last health
  report (status lines and firing alerts) as JSON; ``streamrec status`` reads these.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from core import kafka_clients
from core.errors import UnavailableError
from core.retry import retry
from core.settings import Settings
from messaging.kafka_admin import kafka_call
from schemas.events import Alert, encode_event
from schemas.keyspace import Keyspace
from schemas.topics import Topic

T = TypeVar("T")

#: Topics the worker group consumes (must match ``streams.app.CONSUMED``; a unit test checks).
CONSUMED_TOPICS: tuple[Topic, ...] = (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS)
_UNKNOWN_TOPIC = 3
#: lags up to this are checked for being transaction markers only (OffsetsProbe.sample)
_MARKER_LAG_MAX = 16
CLIENT_ID = "streamrec-monitor"

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
"""(logical topic, partition)."""


async def _kafka(settings: Settings, what: str, awaitable: Awaitable[T]) -> T:
    return await kafka_call(settings, what, awaitable)


@dataclass(frozen=True, slots=True)
class OffsetSample:
    """End and committed offsets of the worker group's partitions at one moment."""

    at: float
    """Wall-clock time (s) the end offsets were read."""
    ends: dict[TopicPartitionKey, int]
    committed: dict[TopicPartitionKey, int]
    """Committed offset; for a partition the group never committed, its log start offset
    (the worker starts from the earliest message)."""
    missing_topics: tuple[str, ...] = ()
    """Logical topics that do not exist on the broker."""

    @property
    def lags(self) -> dict[TopicPartitionKey, int]:
        return {key: max(0, end - self.committed.get(key, 0)) for key, end in self.ends.items()}

    def end_totals(self) -> dict[str, int]:
        """Sum of the end offsets per logical topic (moves whenever anything is produced)."""
        totals: dict[str, int] = {}
        for (topic, _), end in self.ends.items():
            totals[topic] = totals.get(topic, 0) + end
        return totals


class OffsetsProbe:
    """Long-lived Kafka clients that read end offsets and a group's committed offsets.

    Joins no consumer group (reads offsets only), so probing never rebalances the workers.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        group: str | None = None,
        topics: Sequence[Topic] = CONSUMED_TOPICS,
    ) -> None:
        self.settings = settings
        self.group = group or settings.consumer_group
        self.logical = {settings.topic(t.value): t.value for t in topics}
        self._admin: Any = None
        self._consumer: Any = None

    async def start(self) -> None:
        if self._admin is not None:
            return
        s = self.settings
        admin = kafka_clients.admin(s, client_id=CLIENT_ID)
        consumer = kafka_clients.consumer(s, client_id=CLIENT_ID)
        try:
            await _kafka(s, "connect", admin.start())
            await _kafka(s, "connect", consumer.start())
        except UnavailableError:
            await self._close(admin, consumer)
            raise
        self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        await self._close(admin, consumer)

    async def _close(self, admin: Any, consumer: Any) -> None:
        await kafka_clients.close(consumer, self.settings)
        await kafka_clients.close(admin, self.settings)

    async def try_sample(self) -> OffsetSample | None:
        """Sample, (re)connecting as needed; None (logged) while Kafka does not answer.

        The clients are dropped after a failure, so the next call connects afresh.
        """
        try:
            await self.start()
            return await self.sample()
        except UnavailableError as exc:
            log.warning("consumer lag not measured: %s", exc)
            await self.stop()
            return None

    async def __aenter__(self) -> OffsetsProbe:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _partitions(self) -> tuple[list[TopicPartition], tuple[str, ...]]:
        described = await _kafka(
            self.settings, "describe topics", self._admin.describe_topics(list(self.logical))
        )
        tps: list[TopicPartition] = []
        missing: list[str] = []
        for topic in described:
            name = topic["topic"]
            if topic["error_code"] == _UNKNOWN_TOPIC or not topic["partitions"]:
                missing.append(self.logical.get(name, name))
            elif topic["error_code"] != 0:
                raise UnavailableError(f"describe {name}: error code {topic['error_code']}")
            else:
                tps += [TopicPartition(name, p["partition"]) for p in topic["partitions"]]
        return tps, tuple(sorted(missing))

    async def end_offsets(self) -> tuple[float, dict[TopicPartitionKey, int], tuple[str, ...]]:
        """(time read, end offset per partition, missing logical topics)."""
        if self._consumer is None:
            raise UnavailableError("offsets probe is not started")
        tps, missing = await self._partitions()
        ends = await _kafka(self.settings, "end offsets", self._consumer.end_offsets(tps))
        at = time.time()
        by_key = {(self.logical[tp.topic], tp.partition): int(o) for tp, o in ends.items()}
        return at, by_key, missing

    async def sample(self) -> OffsetSample:
        """End offsets and the group's committed offsets of every consumed partition."""
        if self._admin is None:
            raise UnavailableError("offsets probe is not started")
        at, ends, missing = await self.end_offsets()
        tps = [TopicPartition(self.settings.topic(t), p) for t, p in ends]
        committed: dict[TopicPartitionKey, int] = {}
        if tps:
            raw = await _kafka(
                self.settings,
                "committed offsets",
                self._admin.list_consumer_group_offsets(self.group, partitions=tps),
            )
            never: list[TopicPartition] = []
            for tp in tps:
                meta = raw.get(tp)
                if meta is None or meta.offset < 0:
                    never.append(tp)
                else:
                    committed[(self.logical[tp.topic], tp.partition)] = int(meta.offset)
            if never:
                starts = await _kafka(
                    self.settings, "start offsets", self._consumer.beginning_offsets(never)
                )
                for tp, offset in starts.items():
                    committed[(self.logical[tp.topic], tp.partition)] = int(offset)
            await self._past_markers(ends, committed)
        return OffsetSample(at=at, ends=ends, committed=committed, missing_topics=missing)

    async def _past_markers(
        self, ends: Mapping[TopicPartitionKey, int], committed: dict[TopicPartitionKey, int]
    ) -> None:
        """Move ``committed`` to the end where only transaction markers lie between.

        A transactional producer (``streamrec replay``, messaging.replay) writes a commit
        marker after its records; the worker commits the offset after the last record it
        applied, so without this a caught-up worker would show a lag of one per partition
        (more after an aborted transaction) until new events arrive. Only small lags
        (≤ ``_MARKER_LAG_MAX``) are read, by a read-committed consumer of their own.
        """
        suspects = {
            TopicPartition(self.settings.topic(t), p): key
            for key, end in ends.items()
            for t, p in [key]
            if 0 < end - committed.get(key, end) <= _MARKER_LAG_MAX
        }
        if not suspects:
            return
        reader = kafka_clients.consumer(self.settings, client_id=CLIENT_ID, group_id=None)
        found: dict[TopicPartitionKey, int] = {}
        try:
            await _kafka(self.settings, "connect", reader.start())
            reader.assign(list(suspects))
            for tp, key in suspects.items():
                reader.seek(tp, committed[key])
            pending = dict(suspects)
            async with asyncio.timeout(self.settings.network_timeout_s):
                while pending:
                    batch = await reader.getmany(*pending, timeout_ms=200)
                    for tp, records in batch.items():
                        key = suspects[tp]
                        if tp in pending and any(r.offset < ends[key] for r in records):
                            del pending[tp]  # a record waits: a real lag
                    for tp, key in list(pending.items()):
                        if await reader.position(tp) >= ends[key]:
                            found[key] = ends[key]  # markers only
                            del pending[tp]
        except (TimeoutError, KafkaError, OSError, UnavailableError) as exc:
            log.debug("transaction markers not checked: %s", exc)  # the lags stay as read
        finally:
            await kafka_clients.close(reader, self.settings)
        committed.update(found)


class AlertProducer:
    """Produces ``alert.v1`` events to the alerts topic, keyed by ``alert_id``.

    Events that could not be sent (broker away) wait in a bounded buffer and are retried on
    the next :meth:`send`; on overflow the oldest are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, settings: Settings, *, buffer_size: int = 1000) -> None:
        self.settings = settings
        self.topic = settings.topic(Topic.ALERTS.value)
        self.buffer_size = buffer_size
        self.pending: list[Alert] = []
        self.dropped = 0
        self._producer: Any = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = kafka_clients.producer(self.settings, client_id=CLIENT_ID, acks="all")
        try:
            await _kafka(self.settings, "connect", producer.start())
        except UnavailableError:
            await kafka_clients.close(producer, self.settings)
            raise
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        await kafka_clients.close(producer, self.settings)

    async def send(self, alerts: Sequence[Alert]) -> int:
        """Send buffered and new alerts in order; return how many were sent.

        Raises :class:`UnavailableError` when the broker does not take them (they stay
        buffered).
        """
        self.pending.extend(alerts)
        if len(self.pending) > self.buffer_size:
            excess = len(self.pending) - self.buffer_size
            self.dropped += excess
            del self.pending[:excess]
        if not self.pending:
            return 0
        await self.start()
        sent = 0
        while self.pending:
            alert = self.pending[0]
            await _kafka(
                self.settings,
                "send alert",
                self._producer.send_and_wait(
                    self.topic, encode_event(alert), key=alert.alert_id.encode()
                ),
            )
            self.pending.pop(0)
            sent += 1
        return sent


@dataclass(frozen=True, slots=True)
class FreshnessReading:
    """What Redis says about the newest processed events and state writes."""

    newest_by_topic: dict[str, float]
    """Logical topic → event time of the newest processed event (absent: none yet)."""
    last_write: float | None
    """Time of the newest state write (None: no worker has written yet)."""

    def event_ages(self, now: float, topics: Sequence[str]) -> dict[str, float]:
        """Age per topic; ``inf`` for a topic with no processed event."""
        return {
            t: max(0.0, now - self.newest_by_topic[t]) if t in self.newest_by_topic else math.inf
            for t in topics
        }

    def state_write_age(self, now: float) -> float:
        return math.inf if self.last_write is None else max(0.0, now - self.last_write)


def failure_reason(exc: BaseException) -> str:
    """The exception's message on one line, or its type name when the message is empty.

    Timeouts and connection errors often carry no message (``str(TimeoutError())`` is ``""``);
    an error line must still say what happened.
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def redis_failure(exc: BaseException, timeout_s: float) -> str:
    """One-line reason of a failed Redis call (never an empty reason)."""
    if isinstance(exc, TimeoutError) and not str(exc).strip():
        # asyncio.timeout around the call: no byte came back in time (a hung or saturated
        # server, or a network that drops packets)
        return f"Redis did not answer within {timeout_s:g} s (TimeoutError)"
    return f"Redis did not answer: {failure_reason(exc)}"


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def heartbeat_ttl_s(interval_s: float) -> int:
    """TTL of a heartbeat: three missed intervals, at least 15 s."""
    return max(15, math.ceil(3 * interval_s))


class MonitorStore:
    """Redis gateway of the monitors (freshness, CTR counters, state, heartbeats)."""

    def __init__(self, client: aioredis.Redis, keys: Keyspace, *, timeout_s: float) -> None:
        self.client = client
        self.keys = keys
        self.timeout_s = timeout_s

    @classmethod
    async def connect(
        cls, url: str, keys: Keyspace, *, timeout_s: float, attempts: int = 3
    ) -> MonitorStore:
        """Connect and PING with bounded retries."""
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        store = cls(client, keys, timeout_s=timeout_s)
        try:
            await retry(
                lambda: store._call(client.ping()),
                what="connect to Redis",
                attempts=attempts,
                retry_on=(UnavailableError,),
                logger=log,
            )
        except UnavailableError:
            await client.aclose()
            raise
        return store

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await awaitable
        except (TimeoutError, OSError, RedisError) as exc:
            raise UnavailableError(redis_failure(exc, self.timeout_s)) from exc

    # --- freshness -----------------------------------------------------------------------------
    async def record_newest(self, newest_by_topic: Mapping[str, float]) -> None:
        """Raise the stored newest event time per topic (never lowers it)."""
        if newest_by_topic:
            await self._call(
                self.client.zadd(self.keys.stats("newest"), dict(newest_by_topic), gt=True)
            )

    async def read_freshness(self) -> FreshnessReading:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(self.keys.stats("newest"), 0, -1, withscores=True)
        pipe.hget(self.keys.meta, "last_write")
        newest_raw, last_write = await self._call(pipe.execute())
        return FreshnessReading(
            newest_by_topic={_text(m): float(s) for m, s in newest_raw},
            last_write=float(last_write) if last_write else None,
        )

    async def read_ctr_counters(self) -> dict[str, int]:
        """The ``surface|variant|imp`` / ``|clk`` … counters of the exposure join."""
        raw = await self._call(self.client.hgetall(self.keys.surface_variant_ctr))
        return {_text(k): int(v) for k, v in raw.items()}

    # --- persisted monitor state ---------------------------------------------------------------
    def state_key(self, role: str, instance: str) -> str:
        return self.keys.stats(f"monitor:{role}:{instance}")

    async def load_state(self, role: str, instance: str) -> dict[str, Any] | None:
        raw = await self._call(self.client.get(self.state_key(role, instance)))
        if raw is None:
            return None
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("monitor state is not a JSON object")
        return data

    async def save_state(
        self, role: str, instance: str, state: Mapping[str, Any], ttl_s: int
    ) -> int:
        """Store the state with a TTL; return its size in bytes."""
        payload = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)
        await self._call(self.client.set(self.state_key(role, instance), payload, ex=ttl_s))
        return len(payload)

    # --- heartbeats and health reports ---------------------------------------------------------
    async def write_heartbeat(
        self, role: str, instance: str, doc: Mapping[str, Any], ttl_s: int
    ) -> None:
        await self._call(
            self.client.set(self.keys.heartbeat(role, instance), orjson.dumps(doc), ex=ttl_s)
        )

    async def delete_heartbeat(self, role: str, instance: str) -> None:
        await self._call(self.client.delete(self.keys.heartbeat(role, instance)))

    async def read_heartbeats(self, role: str) -> list[dict[str, Any]]:
        """Documents of the live processes of ``role`` (their keys have not expired)."""

        async def collect() -> list[dict[str, Any]]:
            keys = [
                k
                async for k in self.client.scan_iter(
                    match=self.keys.heartbeat(role, "*"), count=500
                )
            ]
            if not keys:
                return []
            docs = []
            for raw in await self.client.mget(keys):
                if raw is not None:
                    doc = orjson.loads(raw)
                    if isinstance(doc, dict):
                        docs.append(doc)
            return sorted(docs, key=lambda d: str(d.get("instance", "")))

        return await self._call(collect())

    async def claim_instance(self, role: str, wanted: str, ttl_s: int) -> str:
        """Name this process uses in its heartbeat and state keys.

        ``wanted`` (the host name by default) unless another *live* process already
        heartbeats under it, in which case ``wanted-PID``: two workers on one host must not
        overwrite each other's state. A heartbeat left by a dead process on this host (same
        host, pid not running) is taken over, so a restarted worker restores its state.
        """
        name = wanted or socket.gethostname() or "localhost"
        name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:64]
        raw = await self._call(self.client.get(self.keys.heartbeat(role, name)))
        if raw is not None:
            doc = orjson.loads(raw)
            pid, host = doc.get("pid"), doc.get("host")
            mine = host == socket.gethostname() and pid == os.getpid()
            if not mine and not (host == socket.gethostname() and not _pid_alive(pid)):
                name = f"{name[:54]}-{os.getpid()}"
        # hold the name right away, before the first evaluation
        await self.write_heartbeat(role, name, process_doc(role, name), ttl_s)
        return name


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_doc(role: str, instance: str, **extra: Any) -> dict[str, Any]:
    """The identity part of a heartbeat document."""
    return {
        "role": role,
        "instance": instance,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "ts": time.time(),
        **extra,
    }
