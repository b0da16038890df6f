"""The one retry helper: call again what failed for a while (a broker or Redis away).

``await retry(fn, what="…")`` calls ``fn()`` (an async function of no arguments) until it
returns, built on tenacity:

* only errors that ``retry_on`` accepts (a predicate or exception types) are retried, by
  default :func:`is_retriable` (errors whose ``retriable`` flag is set, as on
  :class:`core.errors.StreamrecError` and aiokafka's errors, timeouts and refused / reset
  connections); any other error, and never a cancellation, propagates at once;
* the waits grow exponentially: ``initial_s · 2^(n-1)`` before retry *n*, capped at ``max_s``,
  of which a random part (``jitter``, half by default) is left out, so clients that lost the
  same server do not all come back at the same instant;
* ``attempts`` bounds the calls (``None``: no bound) and ``deadline_s`` the time: no retry
  starts after it (counted from the first call); then the last error is raised as it was;
* each retry logs one warning line: what failed, why, which attempt, the wait;
* ``on_retry(error)`` (plain or async) runs before each wait, e.g. to drop a broken client.

Polls that wait for a state (a topic leader, a process exit) are not retries and keep their
own loops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    stop_never,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

__all__ = ["is_retriable", "retry"]

T = TypeVar("T")
log = logging.getLogger("streamrec.retry")


def is_retriable(error: BaseException) -> bool:
    """True for errors worth another try: a ``retriable`` flag (streamrec's and aiokafka's
    errors carry one), a timeout, or a refused / reset / aborted connection."""
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    return getattr(error, "retriable", False) is True


async def retry(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int | None = 5,
    deadline_s: float | None = None,
    initial_s: float = 0.2,
    max_s: float = 2.0,
    jitter: float = 0.5,
    retry_on: Callable[[BaseException], bool] | tuple[type[BaseException], ...] = is_retriable,
    on_retry: Callable[[BaseException], Awaitable[None] | None] | None = None,
    logger: logging.Logger = log,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await fn()``, retried as the module docstring says; return its result."""
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    stop: stop_base = stop_never if attempts is None else stop_after_attempt(attempts)
    if deadline_s is not None:
        stop = stop | stop_before_delay(deadline_s)
    # fixed part + random part of one exponential curve: a wait in [(1 - jitter)·w, w]
    fixed, spread = 1.0 - jitter, jitter
    wait: wait_base = wait_exponential(multiplier=initial_s * fixed, max=max_s * fixed)
    if spread > 0:
        wait = wait + wait_random_exponential(multiplier=initial_s * spread, max=max_s * spread)
    bound = "" if attempts is None else f" of {attempts}"
    accepts = (lambda e: isinstance(e, retry_on)) if isinstance(retry_on, tuple) else retry_on

    async def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        assert error is not None  # only failed attempts are retried
        logger.warning(
            "%s failed (%s: %s); retrying in %.2f s (attempt %d%s)",
            what,
            type(error).__name__,
            error,
            state.upcoming_sleep,
            state.attempt_number,
            bound,
        )
        if on_retry is not None:
            done = on_retry(error)
            if done is not None:
                await done

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop,
        wait=wait,
        # never a cancellation, an interrupt or an exit, whatever retry_on says
        retry=retry_if_exception(lambda e: isinstance(e, Exception) and accepts(e)),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:  # tenacity awaits coroutine functions only, not a lambda's result
        return await fn()

    return await retrying(attempt)
