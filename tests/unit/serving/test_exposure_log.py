"""Exposure log (serving.exposure_log): event shape, bounded buffer, retry, flush on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner

from schemas.events import Context
from serving.exposure_log import ExposureLog, PendingExposure, build_exposure

NOW = 1_700_000_000.0


def pending(n: int, *, user: str | None = "u1", session: str | None = None) -> PendingExposure:
    return PendingExposure(
        request_id=f"req-{n}",
        user_id=user,
        session_id=session,
        ts=NOW,
        items=[("a", 0.9), ("b", 0.5)],
        context=Context(tenant="t", surface="pdp", extra={"device": "ios"}),
        variant="beta",
        algo_version="covis-v1",
        latency_ms=3.5,
        stage="segment_popularity",
        degraded=False,
    )


class FakeBatch:
    """aiokafka's ``BatchBuilder`` as the log uses it: takes ``capacity`` records (the first
    always), then reports itself full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, bytes]] = []
        self.closed = False

    def append(self, *, timestamp: float | None, key: bytes, value: bytes) -> object | None:
        assert timestamp is None  # the broker stamps it
        if self.closed or (self.records and len(self.records) >= self.capacity):
            self.closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """Records batches sent; fails ``start()`` while ``down`` is set."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def start(self) -> None:
        if self.broker.down:
            raise KafkaConnectionError("broker down")

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.broker.partitions))

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.broker.batch_capacity)

    async def send_batch(
        self, batch: FakeBatch, topic: str, *, partition: int
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.broker.fail_sends:
            future.set_exception(KafkaConnectionError("send failed"))
        else:
            self.broker.batches.append((partition, len(batch.records)))
            for key, value in batch.records:
                self.broker.messages.append((topic, key, orjson.loads(value)))
            future.set_result(None)
        return future

    async def stop(self) -> None:
        return None


class FakeBroker:
    def __init__(self, partitions: int = 1, batch_capacity: int = 100) -> None:
        self.down = False
        self.fail_sends = False
        self.partitions = partitions
        self.batch_capacity = batch_capacity
        self.messages: list[tuple[str, bytes, dict[str, Any]]] = []
        self.batches: list[tuple[int, int]] = []  # (partition, records) per batch sent

    def factory(self) -> FakeProducer:
        return FakeProducer(self)

    def request_ids(self) -> list[str]:
        return [m[2]["request_id"] for m in self.messages]


async def until(condition: Callable[[], bool], within_s: float = 30.0) -> None:
    """Wait for ``condition``: a deadline for a hang, not a bound on speed."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def make_log(broker: FakeBroker, capacity: int = 100) -> ExposureLog:
    return ExposureLog(
        topic="p.exposures", capacity=capacity, producer_factory=broker.factory, ack_timeout_s=1.0
    )


def test_build_exposure_ranks_context_and_user() -> None:
    event = build_exposure(pending(1))
    assert event.request_id == "req-1"
    assert event.user_id == "u1"
    assert [(i.item_id, i.rank, i.score) for i in event.items] == [("a", 1, 0.9), ("b", 2, 0.5)]
    assert event.context.extra == {"device": "ios", "fallback_stage": "segment_popularity"}
    assert (event.variant, event.algo_version, event.latency_ms) == ("beta", "covis-v1", 3.5)
    assert event.ts.timestamp() == NOW


def test_session_and_anonymous_users() -> None:
    session = build_exposure(pending(1, user=None, session="s9"))
    assert session.user_id == "s9"
    assert session.context.extra["session_id"] == "s9"
    anonymous = build_exposure(pending(2, user=None))
    assert anonymous.user_id == "anonymous"


async def test_events_are_produced_keyed_by_user_in_order() -> None:
    broker = FakeBroker()
    log = make_log(broker)
    await log.start()
    for n in range(5):
        log.log(pending(n))
    await log.stop(grace_s=2.0)
    assert broker.request_ids() == [f"req-{n}" for n in range(5)]
    assert {(topic, key) for topic, key, _ in broker.messages} == {("p.exposures", b"u1")}
    assert (log.sent, log.dropped, log.depth) == (5, 0, 0)


async def test_events_wait_while_kafka_is_down_then_flow() -> None:
    broker = FakeBroker()
    broker.down = True
    log = make_log(broker)
    await log.start()
    for n in range(3):
        log.log(pending(n))
    await asyncio.sleep(0.3)
    assert log.depth == 3 and broker.messages == []
    broker.down = False
    for _ in range(200):
        if not log.depth:
            break
        await asyncio.sleep(0.05)
    assert broker.request_ids() == ["req-0", "req-1", "req-2"]
    await log.stop(grace_s=1.0)
    assert log.dropped == 0


async def test_failed_sends_are_retried_in_order() -> None:
    broker = FakeBroker()
    broker.fail_sends = True
    log = make_log(broker)
    await log.start()
    for n in range(4):
        log.log(pending(n))
    await until(lambda: log.failures >= 1)
    assert log.depth == 4
    broker.fail_sends = False
    await log.stop(grace_s=10.0)
    assert broker.request_ids() == [f"req-{n}" for n in range(4)]


async def test_full_buffer_drops_the_oldest_and_stop_counts_the_rest() -> None:
    broker = FakeBroker()
    broker.down = True
    log = make_log(broker, capacity=3)
    await log.start()
    for n in range(7):
        log.log(pending(n))
    assert log.depth == 3
    assert log.dropped == 4
    await log.stop(grace_s=0.2)
    assert log.dropped == 7
    assert broker.messages == []


async def test_log_never_blocks_without_a_started_sender() -> None:
    log = make_log(FakeBroker(), capacity=2)
    for n in range(1000):
        log.log(pending(n))
    assert (log.depth, log.dropped) == (2, 998)
    await log.stop()  # never started: nothing to do


@pytest.mark.parametrize("bad_score", [float("nan"), float("inf")])
async def test_an_invalid_event_is_dropped_not_fatal(bad_score: float) -> None:
    broker = FakeBroker()
    log = make_log(broker)
    await log.start()
    bad = PendingExposure(
        request_id="bad",
        user_id="u1",
        session_id=None,
        ts=NOW,
        items=[("a", bad_score)],
        context=Context(),
        variant="v",
        algo_version="a",
        latency_ms=1.0,
        stage="none",
        degraded=False,
    )
    log.log(bad)
    log.log(pending(1))
    await log.stop(grace_s=2.0)
    assert broker.request_ids() == ["req-1"]
    assert log.dropped == 1


async def test_one_batch_per_partition_by_the_default_partitioner_in_order() -> None:
    broker = FakeBroker(partitions=3, batch_capacity=2)
    log = make_log(broker)
    await log.start()
    users = ["u1", "u2", "u3", "u4", "u5", "u6"]
    for n in range(12):
        log.log(pending(n, user=users[n % len(users)]))
    await log.stop(grace_s=2.0)
    assert (log.sent, log.dropped) == (12, 0)
    assert sorted(broker.request_ids()) == sorted(f"req-{n}" for n in range(12))
    partitioner = DefaultPartitioner()
    where = {u: partitioner(u.encode(), [0, 1, 2], [0, 1, 2]) for u in users}
    assert len(set(where.values())) > 1  # the users do spread over partitions
    # a full batch (2 records here) is sent and the partition's next records start another
    assert all(records <= 2 for _, records in broker.batches)
    assert sum(records for _, records in broker.batches) == 12
    for partition in range(3):
        mine = [m[2]["request_id"] for m in broker.messages if where[m[1].decode()] == partition]
        assert mine == sorted(mine, key=lambda rid: int(rid.split("-")[1]))  # in order


async def test_exposures_gather_for_the_linger_time() -> None:
    broker = FakeBroker()
    log = ExposureLog(
        topic="p.exposures",
        capacity=100,
        producer_factory=broker.factory,
        ack_timeout_s=1.0,
        linger_s=2.0,  # far longer than the test takes to log three: no race with a slow run
    )
    await log.start()
    log.log(pending(0))
    await asyncio.sleep(0.05)
    log.log(pending(1))
    log.log(pending(2))
    await asyncio.sleep(0.05)
    assert broker.messages == []  # still gathering
    await log.stop(grace_s=30.0)
    assert broker.batches == [(0, 3)]  # one request for the three
    assert broker.request_ids() == ["req-0", "req-1", "req-2"]


async def test_a_topic_without_partitions_is_retried_not_fatal() -> None:
    broker = FakeBroker(partitions=0)
    log = make_log(broker)
    await log.start()
    log.log(pending(1))
    await until(lambda: log.failures >= 1)
    assert log.depth == 1  # kept, retried with backoff
    broker.partitions = 2
    await log.stop(grace_s=5.0)
    assert broker.request_ids() == ["req-1"]
