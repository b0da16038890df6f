"""Admission at the serving edge: API key, per-caller rate limit, server-wide in-flight cap.

:meth:`EdgePolicy.admit` decides for one call before its handler runs (pure, no grpc
import; :mod:`serving.request_guard` maps a :class:`Refusal` to a status):

* ``Recommender`` calls need a known API key when ``serving_api_keys`` is set
  (UNAUTHENTICATED otherwise); the caller is then ``key:NAME``, else the peer's address
  without its port (``ipv4:10.0.0.7``), so reconnecting does not refill a bucket;
* ``Recommender`` calls take a token of their caller's bucket (``serving_rate_limit_per_s``,
  ``serving_rate_limit_burst``) — RESOURCE_EXHAUSTED when it is empty;
* ``Recommender`` and ``Admin`` calls count against ``serving_max_in_flight`` —
  RESOURCE_EXHAUSTED past it. Health checks and reflection are never refused, so probes
  still answer under overload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from serving.api_keys import API_KEY_HEADER, ApiKeys
from serving.rate_limit import CallerLimiter, InFlight

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["EdgePolicy", "Refusal", "RefusalReason", "Scope", "caller_of_peer"]


class Scope(StrEnum):
    """Which checks a service's calls go through."""

    KEYED = "keyed"  # Recommender: API key, rate limit, in-flight cap
    CAPPED = "capped"  # Admin: in-flight cap only
    OPEN = "open"  # health, reflection: never refused


class RefusalReason(StrEnum):
    """``reason`` label of ``streamrec_serving_refused_total``."""

    UNAUTHENTICATED = "unauthenticated"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: RefusalReason
    message: str


def caller_of_peer(peer: str | None) -> str:
    """``ipv4:1.2.3.4:5678`` → ``ipv4:1.2.3.4``; ``ipv6:[::1]:5678`` → ``ipv6:[::1]``."""
    if not peer:
        return "unknown"
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rpartition(":")[0]
    return peer


def _header(metadata: Iterable[tuple[str, str | bytes]], name: str) -> str | None:
    for key, value in metadata:
        if key == name:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class EdgePolicy:
    """The three checks, each off unless configured (:attr:`active` is False when all are)."""

    def __init__(
        self, api_keys: ApiKeys, limiter: CallerLimiter | None, in_flight: InFlight
    ) -> None:
        self.api_keys = api_keys
        self.limiter = limiter
        self.in_flight = in_flight

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgePolicy:
        limiter = None
        if settings.serving_rate_limit_per_s > 0:
            limiter = CallerLimiter(
                settings.serving_rate_limit_per_s, settings.serving_rate_limit_burst
            )
        return cls(
            ApiKeys.from_entries(settings.serving_api_keys),
            limiter,
            InFlight(settings.serving_max_in_flight),
        )

    @property
    def active(self) -> bool:
        return self.api_keys.required or self.limiter is not None or bool(self.in_flight.limit)

    def admit(
        self,
        scope: Scope,
        metadata: Iterable[tuple[str, str | bytes]],
        peer: str | None,
        now: float,
    ) -> Refusal | None:
        """None when the call may run (then call :meth:`release` once it is done)."""
        if scope is Scope.OPEN:
            return None
        if scope is Scope.KEYED:
            caller = caller_of_peer(peer)
            if self.api_keys.required:
                name = self.api_keys.caller(_header(metadata, API_KEY_HEADER))
                if name is None:
                    return Refusal(
                        RefusalReason.UNAUTHENTICATED,
                        f"missing or unknown API key (send it as {API_KEY_HEADER} metadata)",
                    )
                caller = f"key:{name}"
            if self.limiter is not None:
                wait_s = self.limiter.allow(caller, now)
                if wait_s is not None:
                    return Refusal(
                        RefusalReason.RATE_LIMITED,
                        f"rate limit of {self.limiter.rate:g} calls/s (burst "
                        f"{self.limiter.burst:g}) reached for {caller}; retry in {wait_s:.2f} s",
                    )
        if not self.in_flight.enter():
            return Refusal(
                RefusalReason.OVERLOADED,
                f"server busy: {self.in_flight.limit} calls in flight (serving_max_in_flight); "
                "retry with backoff",
            )
        return None

    def release(self, scope: Scope) -> None:
        """A call admitted with ``scope`` finished."""
        if scope is not Scope.OPEN:
            self.in_flight.leave()
