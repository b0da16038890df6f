"""Producer helpers without Kafka: message keys and the drift-free rate limiter."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from messaging.producer import EventProducer, RateLimiter, message_key
from schemas.events import Alert, ExposedItem, Exposure, Item, Outcome, Severity
from schemas.topics import Topic

TS = datetime(2024, 5, 1, tzinfo=UTC)


def test_message_keys_follow_the_topic_spec() -> None:
    outcome = Outcome(user_id="u1", item_id="i1", event_type="view", ts=TS)  # type: ignore[arg-type]
    exposure = Exposure(
        request_id="r", user_id="u2", ts=TS, items=[ExposedItem(item_id="a", rank=1)]
    )
    item = Item(item_id="i9", ts=TS)
    alert = Alert(
        alert_id="lag:x",
        kind="consumer_lag",
        state="firing",
        severity=Severity.WARN,
        value=1.0,
        threshold=0.5,
        window_s=60.0,
        cause="behind",
        first_seen=TS,
        ts=TS,
    )
    assert message_key(Topic.OUTCOMES, outcome) == b"u1"
    assert message_key(Topic.EXPOSURES, exposure) == b"u2"
    assert message_key(Topic.ITEMS, item) == b"i9"
    assert message_key(Topic.ALERTS, alert) == b"lag:x"
    with pytest.raises(ConfigError, match="user_id"):
        message_key(Topic.OUTCOMES, item)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_does_not_drift_when_sleeps_overshoot() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100.0, burst=1, clock=clock)
    rng = random.Random(7)
    start = clock.now
    for _ in range(1000):
        delay = limiter.reserve()
        # the sleep overshoots by up to 3 ms, as event-loop sleeps do
        clock.now += delay + (rng.uniform(0, 0.003) if delay > 0 else 0.0)
    # 1000 events at 100/s: the last one is due 9.99 s after the first, not 9.99 s + overshoot
    assert clock.now - start == pytest.approx(9.99, abs=0.004)


def test_rate_limiter_burst_then_steady() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=5, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == [0.0] * 5
    assert limiter.reserve() == pytest.approx(0.1)
    clock.now += 10.0  # idle for a long time: at most `burst` events may then go at once
    assert [limiter.reserve() for _ in range(5)] == [0.0] * 5
    assert limiter.reserve() > 0


def test_rate_limiter_long_run_rate_with_default_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2000.0, clock=clock)
    for _ in range(20_000):
        clock.now += limiter.reserve()
    assert 20_000 / (clock.now - 1000.0) == pytest.approx(2000.0, rel=0.01)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, None), (-1.0, None), (5.0, 0)])
def test_rate_limiter_rejects_bad_arguments(rate: float, burst: int | None) -> None:
    with pytest.raises(ConfigError):
        RateLimiter(rate, burst=burst)


async def test_producer_not_started_refuses_to_send() -> None:
    producer = EventProducer(Settings())
    with pytest.raises(RuntimeError, match="not started"):
        await producer.send_raw(Topic.OUTCOMES, b"{}", b"k")
    await producer.stop()  # stopping a producer that never started is a no-op


async def test_unreachable_kafka_is_a_one_line_unavailable_error() -> None:
    cfg = Settings(kafka_bootstrap="127.0.0.1:1", network_timeout_s=1.0)
    with pytest.raises(UnavailableError, match=r"127\.0\.0\.1:1"):
        async with EventProducer(cfg):
            pass
