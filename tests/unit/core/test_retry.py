"""core.retry: bounded attempts, capped exponential waits with jitter, a deadline, retriable
errors only, one log line per retry. Waits are recorded, not slept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from core.errors import ConfigError, StreamrecError, UnavailableError
from core.retry import is_retriable, retry


class Flaky:
    """Fails with ``errors`` one after the other, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return waits, sleep


def down(n: int) -> list[BaseException]:
    return [UnavailableError(f"down {i}") for i in range(n)]


async def test_retries_until_success_with_capped_doubling_waits() -> None:
    waits, sleep = recorder()
    fn = Flaky(*down(5))
    got = await retry(fn, what="x", attempts=6, initial_s=0.1, max_s=0.3, jitter=0.0, sleep=sleep)
    assert got == "ok" and fn.calls == 6
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])


async def test_any_callable_returning_an_awaitable() -> None:
    _, sleep = recorder()
    fn = Flaky(*down(2))
    # a lambda is not a coroutine function: its awaitable must still be awaited per attempt
    assert await retry(lambda: fn.__call__(), what="x", sleep=sleep) == "ok"  # noqa: PLW0108
    assert fn.calls == 3


async def test_jitter_leaves_out_a_random_part_of_each_wait() -> None:
    waits, sleep = recorder()
    await retry(Flaky(*down(200)), what="x", attempts=None, initial_s=0.1, max_s=2.0, sleep=sleep)
    capped = [min(2.0, 0.1 * 2**n) for n in range(len(waits))]
    assert all(0.5 * w - 1e-9 <= got <= w + 1e-9 for got, w in zip(waits, capped, strict=True))
    assert len({round(w, 9) for w in waits[10:]}) > 100  # not one fixed value at the cap


async def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    waits, sleep = recorder()
    errors = down(5)
    fn = Flaky(*errors)
    with pytest.raises(UnavailableError) as caught:
        await retry(fn, what="x", attempts=3, sleep=sleep)
    assert caught.value is errors[2]
    assert fn.calls == 3 and len(waits) == 2


async def test_no_retry_starts_past_the_deadline() -> None:
    waits, sleep = recorder()
    fn = Flaky(*down(10))
    with pytest.raises(UnavailableError):
        await retry(
            fn, what="x", attempts=None, deadline_s=3.5, initial_s=1.0, max_s=60.0,
            jitter=0.0, sleep=sleep,
        )  # fmt: skip
    assert waits == [1.0, 2.0]  # the next wait (4 s) would end past the deadline
    assert fn.calls == 3


@pytest.mark.parametrize(
    "error", [ValueError("bad"), ConfigError("bad config"), TopicAuthorizationFailedError()]
)
async def test_other_errors_are_not_retried(error: BaseException) -> None:
    waits, sleep = recorder()
    fn = Flaky(error)
    with pytest.raises(type(error)):
        await retry(fn, what="x", sleep=sleep)
    assert fn.calls == 1 and waits == []


async def test_retry_on_chooses_the_errors() -> None:
    waits, sleep = recorder()
    fn = Flaky(KeyError("a"), KeyError("b"))
    got = await retry(
        fn, what="x", retry_on=lambda e: isinstance(e, KeyError), jitter=0.0, sleep=sleep
    )
    assert got == "ok" and waits == pytest.approx([0.2, 0.4])
    fn = Flaky(KeyError("a"), ValueError("b"))
    with pytest.raises(ValueError):
        await retry(fn, what="x", retry_on=(KeyError, TimeoutError), sleep=sleep)
    assert fn.calls == 2


async def test_cancellation_is_never_retried() -> None:
    waits, sleep = recorder()
    fn = Flaky(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry(fn, what="x", retry_on=lambda e: True, sleep=sleep)
    assert fn.calls == 1 and waits == []


async def test_one_log_line_and_on_retry_per_retry(caplog: pytest.LogCaptureFixture) -> None:
    _, sleep = recorder()
    seen: list[str] = []

    async def drop_client(error: BaseException) -> None:
        seen.append(str(error))

    with caplog.at_level(logging.WARNING, logger="streamrec.retry"):
        await retry(
            Flaky(*down(2)), what="redis ping", on_retry=drop_client, jitter=0.0, sleep=sleep
        )
    assert seen == ["down 0", "down 1"]
    lines = [r.getMessage() for r in caplog.records if r.name == "streamrec.retry"]
    assert lines == [
        "redis ping failed (UnavailableError: down 0); retrying in 0.20 s (attempt 1 of 5)",
        "redis ping failed (UnavailableError: down 1); retrying in 0.40 s (attempt 2 of 5)",
    ]


async def test_sync_on_retry_and_own_logger(caplog: pytest.LogCaptureFixture) -> None:
    _, sleep = recorder()
    seen: list[BaseException] = []
    logger = logging.getLogger("tests.retry")
    with caplog.at_level(logging.WARNING, logger="tests.retry"):
        await retry(
            Flaky(TimeoutError()), what="x", attempts=None, on_retry=seen.append,
            logger=logger, sleep=sleep,
        )  # fmt: skip
    assert len(seen) == 1 and isinstance(seen[0], TimeoutError)
    assert [r.name for r in caplog.records] == ["tests.retry"]
    assert "(attempt 1)" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UnavailableError("x"), True),
        (StreamrecError("x"), False),
        (ConfigError("x"), False),
        (KafkaConnectionError(), True),
        (TopicAuthorizationFailedError(), False),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
        (OSError("disk"), False),
        (ValueError("x"), False),
    ],
)
def test_is_retriable(error: BaseException, expected: bool) -> None:
    assert is_retriable(error) is expected


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="attempts"):
        await retry(Flaky(), what="x", attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        await retry(Flaky(), what="x", jitter=1.5)
