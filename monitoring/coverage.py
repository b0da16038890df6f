"""Live catalog coverage and long-tail share, from the worker's time-bucketed exposure counts.

The worker counts every item shown in an exposure into ``sh:{bucket}`` (item → impressions,
bucket = exposure ts // ``coverage_bucket_s``; :meth:`schemas.keyspace.Keyspace.shown_bucket`),
cluster-wide and in the same atomic apply as the exposure join. ``streamrec monitor`` (one
per deployment) reads the buckets of the last ``coverage_window_s`` each interval
(:func:`read_coverage_inputs`: one pipelined round trip) and computes (:func:`coverage_of`):

- **coverage**: distinct available items shown in the window / available catalog items
  (``it:cat`` fields minus the ``it:na`` set);
- **long-tail share**: impressions of the window on items outside the *head* / all its
  impressions, the head being the first ``ceil(coverage_head_share · available)`` available
  items of the global popularity list ``pop`` (best first; an item absent from it has no
  popularity and is never in the head).

Both are None while the catalog describes no available item (the long-tail share also with no
impression). The window is read as whole buckets: between ``window`` and ``window + bucket``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Gauge
from redis.exceptions import RedisError

from core.errors import UnavailableError
from monitoring.health import StatusLine
from monitoring.levels import Level
from monitoring.monitor_io import redis_failure
from schemas import metrics as names
from schemas.keyspace import Keyspace
from schemas.metrics import build_metric


@dataclass(frozen=True, slots=True)
class CoverageInputs:
    """What the monitor reads from Redis for one coverage reading."""

    shown: Mapping[str, float]
    """Item → impressions in the window (all items shown, available or not)."""
    catalog: frozenset[str]
    """Items the catalog describes (``it:cat``)."""
    unavailable: frozenset[str]
    popularity: tuple[str, ...]
    """Global popularity list, most popular first."""


@dataclass(frozen=True, slots=True)
class CoverageReading:
    """Coverage and long-tail share of one window (None: not defined, see the module doc)."""

    coverage: float | None
    long_tail_share: float | None
    available_items: int
    shown_available: int
    impressions: int
    head_items: int
    window_s: int

    def to_doc(self) -> dict[str, Any]:
        return {
            "coverage": self.coverage,
            "long_tail_share": self.long_tail_share,
            "available_items": self.available_items,
            "shown_available": self.shown_available,
            "impressions": self.impressions,
            "head_items": self.head_items,
            "window_s": self.window_s,
        }


def head_items(popularity: Iterable[str], available: frozenset[str], share: float) -> set[str]:
    """The first ``ceil(share · len(available))`` available items of ``popularity``."""
    size = math.ceil(share * len(available))
    head: set[str] = set()
    for item in popularity:
        if len(head) >= size:
            break
        if item in available:
            head.add(item)
    return head


def coverage_of(inputs: CoverageInputs, *, head_share: float, window_s: int) -> CoverageReading:
    """Coverage and long-tail share of one window's counts (pure)."""
    available = inputs.catalog - inputs.unavailable
    head = head_items(inputs.popularity, available, head_share)
    total = sum(inputs.shown.values())
    tail = sum(n for item, n in inputs.shown.items() if item not in head)
    shown_available = sum(1 for item in inputs.shown if item in available)
    has_catalog = bool(available)
    return CoverageReading(
        coverage=shown_available / len(available) if has_catalog else None,
        long_tail_share=tail / total if has_catalog and total > 0 else None,
        available_items=len(available),
        shown_available=shown_available,
        impressions=round(total),
        head_items=len(head),
        window_s=window_s,
    )


def window_buckets(now: float, *, window_s: int, bucket_s: int) -> list[int]:
    """Bucket numbers overlapping ``(now - window_s, now]``, oldest first."""
    first = int((now - window_s) // bucket_s)
    last = int(now // bucket_s)
    return list(range(first, last + 1))


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def read_coverage_inputs(
    client: aioredis.Redis,
    keys: Keyspace,
    now: float,
    *,
    window_s: int,
    bucket_s: int,
    timeout_s: float,
) -> CoverageInputs:
    """One pipelined round trip: union of the window's buckets, the catalog, popularity.

    Raises :class:`UnavailableError` when Redis cannot be read within ``timeout_s``.
    """
    bucket_keys = [
        keys.shown_bucket(b) for b in window_buckets(now, window_s=window_s, bucket_s=bucket_s)
    ]
    pipe = client.pipeline(transaction=False)
    pipe.zunion(bucket_keys, withscores=True)
    pipe.hkeys(keys.item_categories)
    pipe.smembers(keys.unavailable_items)
    pipe.zrange(keys.popularity(), 0, -1, desc=True)
    try:
        async with asyncio.timeout(timeout_s):
            shown_raw, cat_raw, na_raw, pop_raw = await pipe.execute()
    except (TimeoutError, OSError, RedisError) as exc:
        raise UnavailableError(redis_failure(exc, timeout_s)) from exc
    return CoverageInputs(
        shown={_text(m): float(s) for m, s in shown_raw},
        catalog=frozenset(_text(x) for x in cat_raw),
        unavailable=frozenset(_text(x) for x in na_raw),
        popularity=tuple(_text(x) for x in pop_raw),
    )


class CoverageMetrics:
    """The two gauges, exported by ``streamrec monitor``; NaN while undefined (as drift's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.coverage = build_metric(names.CATALOG_COVERAGE, registry, Gauge)
        self.long_tail = build_metric(names.LONG_TAIL_SHARE, registry, Gauge)

    def publish(self, reading: CoverageReading) -> None:
        nan = float("nan")
        self.coverage.set(nan if reading.coverage is None else reading.coverage)
        self.long_tail.set(nan if reading.long_tail_share is None else reading.long_tail_share)


def coverage_lines(monitors: Iterable[Mapping[str, Any]]) -> list[StatusLine]:
    """``streamrec status`` lines (OK, informational) from the monitor's heartbeat document."""
    doc = next((d["coverage"] for d in monitors if d.get("coverage")), None)
    if doc is None:
        return []
    window = f"last {int(doc['window_s'])} s"
    return [
        StatusLine(
            "catalog",
            "coverage",
            doc["coverage"],
            Level.OK,
            f"{doc['shown_available']} of {doc['available_items']} available items shown, {window}",
        ),
        StatusLine(
            "catalog",
            "long_tail_share",
            doc["long_tail_share"],
            Level.OK,
            f"of {doc['impressions']} impressions, outside the {doc['head_items']} most "
            f"popular available items, {window}",
        ),
    ]
