"""Event producer for the tools (produce, replay, demo, benchmarks): keyed, batched, bounded.

:class:`EventProducer` wraps :class:`aiokafka.AIOKafkaProducer`: it keys every event by its
topic's key field (``schemas.topics``), batches with ``linger_ms`` for throughput, bounds the
number of unacknowledged messages, puts a timeout on every network wait and turns Kafka
failures into :class:`~core.errors.UnavailableError`. :class:`RateLimiter` paces a
loop to N events per second without drifting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

from core import kafka_clients
from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from schemas.events import encode_event
from schemas.topics import TOPIC_SPECS, Topic

__all__ = ["EventProducer", "ProducerConfig", "RateLimiter", "message_key"]


def message_key(topic: Topic, event: BaseModel) -> bytes:
    """The message key of ``event`` on ``topic``: the value of the topic's key field."""
    field = TOPIC_SPECS[topic].key
    value = getattr(event, field, None)
    if not isinstance(value, str):
        raise ConfigError(
            f"{type(event).__name__} has no {field!r} to key topic {topic.value!r} by"
        )
    return value.encode("utf-8")


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """Batching and delivery knobs; the defaults favour throughput with no loss or duplicate."""

    linger_ms: int = 10
    max_batch_bytes: int = 256 * 1024
    max_in_flight: int = 20_000  # sent but not yet acknowledged; send() waits beyond this
    acks: Literal["all", 1, 0] = "all"
    idempotent: bool = True  # broker drops retried duplicates (needs acks="all")
    client_id: str = "streamrec-producer"


class EventProducer:
    """Async producer of events to the logical topics; use as ``async with``."""

    def __init__(self, settings: Settings, config: ProducerConfig | None = None) -> None:
        self._settings = settings
        self._config = config or ProducerConfig()
        self._timeout = settings.network_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._pending: deque[asyncio.Future[object]] = deque()
        self._error: BaseException | None = None
        self.delivered = 0
        self.failed = 0

    def topic_name(self, topic: Topic) -> str:
        return self._settings.topic(topic.value)

    async def start(self) -> None:
        """Connect to Kafka (idempotent); raise UnavailableError if it does not answer in time."""
        if self._producer is not None:
            return
        cfg = self._config
        producer = kafka_clients.producer(
            self._settings,
            client_id=cfg.client_id,
            request_timeout_s=self._timeout * 3,
            acks=cfg.acks,
            enable_idempotence=cfg.idempotent and cfg.acks == "all",
            linger_ms=cfg.linger_ms,
            max_batch_size=cfg.max_batch_bytes,
            max_request_size=max(cfg.max_batch_bytes, self._settings.max_event_bytes * 2),
        )
        try:
            await asyncio.wait_for(producer.start(), self._timeout)
        except (TimeoutError, KafkaError, OSError) as exc:
            await kafka_clients.close(producer, self._settings)
            raise UnavailableError(
                f"Kafka at {self._settings.kafka_bootstrap} did not answer within "
                f"{self._timeout:g} s ({type(exc).__name__}: {exc})"
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        """Deliver what is pending (bounded wait), then close (idempotent)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await self._drain()
        finally:
            await asyncio.wait_for(producer.stop(), self._timeout * 3)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.stop()
            return
        with contextlib.suppress(UnavailableError):  # the original exception is the one to report
            await self.stop()

    async def send_event(self, topic: Topic, event: BaseModel, *, key: bytes | None = None) -> None:
        """Queue one event, keyed by its topic's key field unless ``key`` is given."""
        await self.send_raw(topic, encode_event(event), key or message_key(topic, event))

    async def send_raw(self, topic: Topic, value: bytes, key: bytes | None) -> None:
        """Queue raw bytes; return once batched (delivery is awaited by flush/stop)."""
        producer = self._require()
        self._raise_failure()
        while len(self._pending) >= self._config.max_in_flight:
            await self._wait_oldest()
        try:
            # no asyncio.wait_for here (it costs a task per message): aiokafka bounds this wait
            # for buffer space itself, by request_timeout_ms, raising KafkaTimeoutError
            future = await producer.send(self.topic_name(topic), value=value, key=key)
        except KafkaError as exc:
            raise UnavailableError(
                f"could not queue a message for {self.topic_name(topic)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        future.add_done_callback(self._on_delivery)
        self._pending.append(future)

    async def flush(self) -> None:
        """Wait until everything queued is acknowledged; raise on the first failed delivery."""
        self._require()
        await self._drain()

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventProducer is not started")
        return self._producer

    def _on_delivery(self, future: asyncio.Future[object]) -> None:
        if future.cancelled():
            self.failed += 1
            self._error = self._error or asyncio.CancelledError("delivery cancelled")
        elif (exc := future.exception()) is not None:
            self.failed += 1
            self._error = self._error or exc
        else:
            self.delivered += 1

    def _raise_failure(self) -> None:
        if self._error is not None:
            exc = self._error
            raise UnavailableError(
                f"delivery to Kafka failed ({self.failed} message(s)): {type(exc).__name__}: {exc}"
            ) from exc

    async def _wait_oldest(self) -> None:
        oldest = self._pending[0]
        done, _ = await asyncio.wait({oldest}, timeout=self._timeout * 3)
        if not done:
            raise UnavailableError(
                f"Kafka did not acknowledge a message within {self._timeout * 3:g} s"
            )
        self._pending.popleft()
        while self._pending and self._pending[0].done():
            self._pending.popleft()
        self._raise_failure()

    async def _drain(self) -> None:
        while self._pending:
            await self._wait_oldest()
        self._raise_failure()


class RateLimiter:
    """Token bucket in GCRA form: paces to ``rate`` events/s with no drift.

    Event *n* is due at ``start + n / rate`` (a theoretical arrival time advanced by exactly
    ``1/rate`` per event, not by how long a sleep actually took), so oversleeping is made up
    by the next events instead of accumulating. ``burst`` events may go back to back (the
    bucket starts full and a caller that fell behind catches up by at most ``burst``).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0:
            raise ConfigError(f"rate must be positive, got {rate!r}")
        self.rate = rate
        self.burst = burst if burst is not None else max(1, int(rate * 0.05))
        if self.burst < 1:
            raise ConfigError(f"burst must be at least 1, got {burst!r}")
        self._interval = 1.0 / rate
        self._tolerance = (self.burst - 1) * self._interval
        self._clock = clock
        self._tat: float | None = None  # theoretical arrival time of the next event

    def reserve(self, n: int = 1) -> float:
        """Reserve ``n`` events; return how many seconds to wait before sending them."""
        now = self._clock()
        tat = now if self._tat is None else max(self._tat, now)
        delay = tat - self._tolerance - now
        self._tat = tat + n * self._interval
        return delay if delay > 1e-9 else 0.0  # float noise is not a reason to sleep

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` more events may be sent."""
        delay = self.reserve(n)
        if delay > 0:
            await asyncio.sleep(delay)
