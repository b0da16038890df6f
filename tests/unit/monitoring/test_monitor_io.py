"""Failures of the monitors' Redis calls always carry a reason, also a hung Redis's."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import UnavailableError
from monitoring.monitor_io import MonitorStore, failure_reason, redis_failure
from schemas.keyspace import Keyspace
from tests.support import hung_listener


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


async def test_a_hung_redis_is_unavailable_with_a_reason() -> None:
    with hung_listener() as port, pytest.raises(UnavailableError) as caught:
        await MonitorStore.connect(
            f"redis://127.0.0.1:{port}/0", Keyspace("t"), timeout_s=0.3, attempts=1
        )
    message = str(caught.value)
    assert message.startswith("Redis did not answer")
    reason = message.removeprefix("Redis did not answer").lstrip(":").strip()
    assert reason, message
    assert "TimeoutError" in message or "Timeout" in message, message
