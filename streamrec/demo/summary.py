"""The figures of one ``streamrec demo`` run: collected live, printed at the end."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from streamrec.demo.shop import Hits

__all__ = ["Summary", "percentile"]


def percentile(values: list[float] | deque[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(slots=True)
class Summary:
    """The figures of one run (also the live view's data)."""

    prefix: str
    rate: float
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    produced: int = 0
    requests: int = 0
    request_errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    fallback_answers: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    freshness_s: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    processed: int = 0
    lag: int | None = None
    last_write_age_s: float | None = None
    hits: Hits = field(default_factory=Hits)
    alerts: list[str] = field(default_factory=list)
    interrupted: bool = False
    produced_rate: float = 0.0
    processed_rate: float = 0.0

    def lines(self) -> list[str]:
        lat50, lat99 = percentile(self.latencies_ms, 50), percentile(self.latencies_ms, 99)
        fr50, fr99 = percentile(self.freshness_s, 50), percentile(self.freshness_s, 99)
        secs = max(self.elapsed_s, 1e-9)
        fallback = self.fallback_answers / self.requests if self.requests else 0.0
        codes = "".join(f", {code} {n}" for code, n in sorted(self.error_codes.items()))
        kinds = ", ".join(sorted(set(self.alerts))) if self.alerts else "none"
        state = " (interrupted)" if self.interrupted else ""
        return [
            f"demo summary{state}: {self.elapsed_s:.1f} s of load, prefix {self.prefix}",
            f"  outcomes produced     {self.produced:>8}   "
            f"({self.produced / secs:.1f}/s, target {self.rate:g}/s)",
            f"  recommend requests    {self.requests:>8}   "
            f"(errors {self.request_errors}{codes}, popularity fallback {fallback:.1%})",
            f"  events processed      {self.processed:>8}   "
            "(items + outcomes + exposures applied by the worker)",
            f"  final lag             {self.lag if self.lag is not None else '?':>8}   events",
            f"  latency p99           {lat99:8.1f} ms (p50 {lat50:.1f} ms, client round trip)",
            f"  freshness p99         {fr99:8.2f} s  (p50 {fr50:.2f} s, age of newest applied "
            "event)",
            f"  HR@10 streamrec         {self.hits.hr_streamrec:8.3f}   "
            f"({self.hits.streamrec}/{self.hits.targets} targets in the server's top 10)",
            f"  HR@10 popularity        {self.hits.hr_popularity:8.3f}   "
            f"({self.hits.popularity}/{self.hits.targets}, demo's running popularity counts)",
            f"  alerts                {len(self.alerts):>8}   ({kinds})",
        ]
