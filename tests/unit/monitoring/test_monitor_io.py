"""Failures of the monitors' Redis calls always carry a reason, also a hung Redis's."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import UnavailableError
from monitoring.monitor_io import MonitorStore, failure_reason, redis_failure
from schemas.keyspace import Keyspace


def test_failure_reason_is_the_message_or_the_type_name() -> None:
    assert failure_reason(TimeoutError()) == "TimeoutError"
    assert failure_reason(OSError()) == "OSError"
    assert failure_reason(RedisTimeoutError()) == "TimeoutError"
    assert failure_reason(RedisConnectionError("Error 111 connecting")) == "Error 111 connecting"
    assert failure_reason(ValueError("two\n  lines ")) == "two lines"
    assert failure_reason(ValueError("   ")) == "ValueError"


def test_redis_failure_never_ends_in_an_empty_reason() -> None:
    assert redis_failure(TimeoutError(), 2.0) == "Redis did not answer within 2 s (TimeoutError)"
    assert redis_failure(RedisTimeoutError(), 2.0) == "Redis did not answer: TimeoutError"
    assert (
        redis_failure(RedisTimeoutError("Timeout reading from 127.0.0.1:1"), 2.0)
        == "Redis did not answer: Timeout reading from 127.0.0.1:1"
    )
    reset = redis_failure(ConnectionResetError(), 0.5)
    assert reset == "Redis did not answer: ConnectionResetError"


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A loopback port whose listener completes TCP handshakes (kernel backlog) and never
    answers a byte: a hung Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


async def test_a_hung_redis_is_unavailable_with_a_reason(hung_port: int) -> None:
    with pytest.raises(UnavailableError) as caught:
        await MonitorStore.connect(
            f"redis://127.0.0.1:{hung_port}/0", Keyspace("t"), timeout_s=0.3, attempts=1
        )
    message = str(caught.value)
    assert message.startswith("Redis did not answer")
    reason = message.removeprefix("Redis did not answer").lstrip(":").strip()
    assert reason, message
    assert "TimeoutError" in message or "Timeout" in message, message
