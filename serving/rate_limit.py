"""Per-caller token buckets and a server-wide cap on calls in flight (pure, no grpc import).

:class:`CallerLimiter` keeps one token bucket per caller (an API key's name, else the peer's
address): ``rate`` tokens per second, at most ``burst`` saved; a call takes one token or is
refused. Buckets of idle callers are forgotten first once ``max_callers`` is passed (a
forgotten caller starts again with a full bucket). :class:`InFlight` counts the calls being
handled and refuses one past ``limit``. Times come from ``time.monotonic()`` by the caller.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["CallerLimiter", "InFlight", "TokenBucket"]

MAX_CALLERS = 100_000


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; starts full."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        """Take one token at time ``now``; False when none is left."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next token (0 when one is there)."""
        return max(0.0, (1.0 - self.tokens) / self.rate)


class CallerLimiter:
    """One :class:`TokenBucket` per caller, least recently seen forgotten past ``max_callers``."""

    def __init__(self, rate_per_s: float, burst: int, max_callers: int = MAX_CALLERS) -> None:
        if rate_per_s <= 0 or burst < 1 or max_callers < 1:
            raise ValueError("rate_per_s > 0, burst >= 1 and max_callers >= 1 are required")
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, caller: str, now: float) -> float | None:
        """None when ``caller`` may call now, else the seconds until it may call again."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[caller] = bucket
            if len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
        if bucket.take(now):
            return None
        return bucket.wait_s()


class InFlight:
    """Calls being handled; :meth:`enter` refuses past ``limit`` (0 = no limit)."""

    __slots__ = ("current", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def enter(self) -> bool:
        if self.limit and self.current >= self.limit:
            return False
        self.current += 1
        return True

    def leave(self) -> None:
        self.current = max(0, self.current - 1)
