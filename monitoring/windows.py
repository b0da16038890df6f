"""Time-bucketed window accumulator for the drift monitor. Pure: no clock, no I/O.

Events are counted into buckets of ``bucket_s`` seconds by the timestamp the caller passes
(event time, clamped to ``now`` so clock-skewed producers land in the newest bucket). At
``now`` the bucket containing ``now`` is still filling and is left out; the *current* window
is the ``window_s`` seconds of closed buckets before it and the *reference* window the
``reference_windows × window_s`` seconds before that. Buckets older than the reference are
dropped, and events that would fall into them are counted in :attr:`late_dropped`.
The two window sums are maintained incrementally (a bucket is added to or subtracted from a
sum when it crosses a window boundary), so :meth:`WindowAccumulator.windows` costs
O(buckets that moved), not O(all buckets).

Bounded memory, and the approximations that buys:

* **Items** — each bucket holds at most ``2 × item_capacity`` item counters: when it grows
  past that, it keeps the ``item_capacity`` largest and drops the rest (a batched
  frequent-items sketch in the spirit of lossy counting / Misra-Gries). Kept counts are
  exact lower bounds; dropped mass is never lost, because :attr:`Tally.item_events` counts
  every event and the drift statistic puts the difference into an "other" bucket. An item
  can only be under-counted in a bucket where it was not among the ``item_capacity`` most
  frequent; the drift monitor compares the top ``N ≪ item_capacity`` items, which are not
  affected in practice.
* **First-seen users and items** — a rotating pair of Bloom filters
  (:class:`monitoring.seen.RotatingBloomSet`), each sized for ``seen_capacity / 2`` ids at
  false-positive rate ``seen_fp_rate``. "Never seen" means "not seen within the last
  ``seen_capacity / 2`` to ``seen_capacity`` distinct ids": when the newer filter is full the
  older one is discarded (ids seen again are copied forward, so active ids are never
  forgotten). False positives make the cold-start share read low by at most ``seen_fp_rate``.
  Memory is ``≈ 1.2 × seen_capacity`` bytes per entity at 1 %.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core.settings import Settings, setting_attr, settings_values
from monitoring.seen import RotatingBloomSet

#: Separator of ``surface|variant`` keys in :attr:`Tally.impressions` / :attr:`Tally.clicks`.
PAIR_SEP = "|"
_STATE_VERSION = 1

FloatArray = npt.NDArray[np.float64]


def pair_key(surface: str, variant: str) -> str:
    """Key of a (surface, variant) pair in the CTR counters."""
    return f"{surface}{PAIR_SEP}{variant}"


def _item_capacity(top_items: int) -> int:
    """Item counters kept per bucket: 4 × the top items the drift monitor compares."""
    return 4 * top_items


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """Geometry and memory bounds of the accumulator: the ``drift_*`` settings."""

    bucket_s: float = setting_attr("drift_bucket_s")
    window_s: float = setting_attr("drift_window_s")
    reference_windows: int = setting_attr("drift_reference_windows")
    item_capacity: int = setting_attr("drift_top_items", derive=_item_capacity)
    seen_capacity: int = setting_attr("drift_seen_capacity")
    seen_fp_rate: float = 0.01  # not a setting

    def __post_init__(self) -> None:
        if not self.bucket_s > 0:
            raise ValueError(f"bucket_s must be > 0, got {self.bucket_s}")
        ratio = self.window_s / self.bucket_s
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"window_s ({self.window_s}) must be a positive multiple of bucket_s "
                f"({self.bucket_s})"
            )
        if self.reference_windows < 1:
            raise ValueError(f"reference_windows must be >= 1, got {self.reference_windows}")
        if self.item_capacity < 1:
            raise ValueError(f"item_capacity must be >= 1, got {self.item_capacity}")
        if self.seen_capacity < 2:
            raise ValueError(f"seen_capacity must be >= 2, got {self.seen_capacity}")
        if not 0 < self.seen_fp_rate < 1:
            raise ValueError(f"seen_fp_rate must be in (0, 1), got {self.seen_fp_rate}")

    @property
    def window_buckets(self) -> int:
        return round(self.window_s / self.bucket_s)

    @property
    def reference_buckets(self) -> int:
        return self.window_buckets * self.reference_windows

    @property
    def reference_s(self) -> float:
        return self.window_s * self.reference_windows

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowConfig:
        return cls(**settings_values(cls, settings))


def _merge(dst: dict[str, int], src: Mapping[str, int], sign: int) -> None:
    for key, count in src.items():
        total = dst.get(key, 0) + sign * count
        if total:
            dst[key] = total
        else:
            dst.pop(key, None)


@dataclass(slots=True)
class Tally:
    """Counts over one bucket or one window (a sum of buckets)."""

    topics: dict[str, int] = field(default_factory=dict)
    """Valid events per logical topic."""
    types: dict[str, int] = field(default_factory=dict)
    """Outcome events per event type."""
    items: dict[str, int] = field(default_factory=dict)
    """Outcome events per item (bounded per bucket; lower bounds, see module doc)."""
    item_events: int = 0
    """Outcome events with an item (exact, includes trimmed mass)."""
    new_items: int = 0
    """Outcome events whose item was never seen before."""
    user_events: int = 0
    new_users: int = 0
    impressions: dict[str, int] = field(default_factory=dict)
    """Items shown per ``surface|variant``."""
    clicks: dict[str, int] = field(default_factory=dict)
    """Clicks joined to an exposure, per ``surface|variant``."""
    deadletters: dict[str, int] = field(default_factory=dict)
    """Dead letters per reason."""

    @property
    def valid_total(self) -> int:
        return sum(self.topics.values())

    @property
    def deadletter_total(self) -> int:
        return sum(self.deadletters.values())

    def add(self, other: Tally, sign: int = 1) -> None:
        """Add (``sign=1``) or subtract (``sign=-1``) another tally in place."""
        _merge(self.topics, other.topics, sign)
        _merge(self.types, other.types, sign)
        _merge(self.items, other.items, sign)
        _merge(self.impressions, other.impressions, sign)
        _merge(self.clicks, other.clicks, sign)
        _merge(self.deadletters, other.deadletters, sign)
        self.item_events += sign * other.item_events
        self.new_items += sign * other.new_items
        self.user_events += sign * other.user_events
        self.new_users += sign * other.new_users

    def copy(self) -> Tally:
        return Tally(
            dict(self.topics),
            dict(self.types),
            dict(self.items),
            self.item_events,
            self.new_items,
            self.user_events,
            self.new_users,
            dict(self.impressions),
            dict(self.clicks),
            dict(self.deadletters),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "topics": self.topics,
            "types": self.types,
            "items": self.items,
            "item_events": self.item_events,
            "new_items": self.new_items,
            "user_events": self.user_events,
            "new_users": self.new_users,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "deadletters": self.deadletters,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        def counts(name: str) -> dict[str, int]:
            raw = data.get(name, {})
            if not isinstance(raw, Mapping):
                raise ValueError(f"tally field {name!r} must be a mapping")
            return {str(k): int(v) for k, v in raw.items()}

        return cls(
            topics=counts("topics"),
            types=counts("types"),
            items=counts("items"),
            item_events=int(data.get("item_events", 0)),
            new_items=int(data.get("new_items", 0)),
            user_events=int(data.get("user_events", 0)),
            new_users=int(data.get("new_users", 0)),
            impressions=counts("impressions"),
            clicks=counts("clicks"),
            deadletters=counts("deadletters"),
        )


@dataclass(frozen=True, slots=True)
class WindowPair:
    """The current and reference windows at ``now`` (copies; safe to keep)."""

    now: float
    current: Tally
    reference: Tally
    current_start: float
    current_end: float
    reference_start: float
    current_s: float
    """Seconds of the current window the accumulator was running for (≤ window_s)."""
    reference_s: float
    """Seconds of the reference window the accumulator was running for (≤ R × window_s)."""
    started_at: float = -math.inf
    """When the accumulator (and its seen-sets) started; ``-inf``: long ago."""


class WindowAccumulator:
    """Buckets of :class:`Tally` plus incrementally maintained current/reference sums."""

    def __init__(self, config: WindowConfig, *, started_at: float) -> None:
        if not math.isfinite(started_at):
            raise ValueError("started_at must be finite")
        self.config = config
        self.started_at = started_at
        self.buckets: dict[int, Tally] = {}
        self.newest_ts: dict[str, float] = {}
        self.late_dropped = 0
        self.users_seen = RotatingBloomSet(config.seen_capacity, config.seen_fp_rate)
        self.items_seen = RotatingBloomSet(config.seen_capacity, config.seen_fp_rate)
        self._now = started_at
        self._cur = Tally()
        self._ref = Tally()
        # bucket index bounds: reference [r0, c0), current [c0, c1); c1 = bucket of now
        self._r0, self._c0, self._c1 = self._bounds(started_at)
        self._rebuild()

    # --- geometry ----------------------------------------------------------------------------
    def _index(self, ts: float) -> int:
        return math.floor(ts / self.config.bucket_s)

    def _bounds(self, now: float) -> tuple[int, int, int]:
        c1 = self._index(now)
        c0 = c1 - self.config.window_buckets
        return c0 - self.config.reference_buckets, c0, c1

    def _sum_for(self, index: int, bounds: tuple[int, int, int] | None = None) -> Tally | None:
        r0, c0, c1 = bounds if bounds is not None else (self._r0, self._c0, self._c1)
        if c0 <= index < c1:
            return self._cur
        if r0 <= index < c0:
            return self._ref
        return None

    def _rebuild(self) -> None:
        self._cur, self._ref = Tally(), Tally()
        for index, bucket in self.buckets.items():
            target = self._sum_for(index)
            if target is not None:
                target.add(bucket)

    def _advance(self, now: float) -> None:
        """Move the windows forward to ``now`` (``now`` never moves backwards)."""
        if not math.isfinite(now):
            raise ValueError("now must be finite")
        if now <= self._now:
            return
        self._now = now
        old = (self._r0, self._c0, self._c1)
        new = self._bounds(now)
        shift = new[2] - old[2]
        if shift == 0:
            return
        if shift >= self.config.window_buckets + self.config.reference_buckets:
            self._r0, self._c0, self._c1 = new
            self._drop_before(new[0])
            self._rebuild()
            return
        # only buckets next to a boundary change window; each is moved exactly once
        changed: set[int] = set()
        for start, end in zip(old, new, strict=True):
            changed.update(range(start, end))
        for index in sorted(changed):
            bucket = self.buckets.get(index)
            if bucket is None:
                continue
            before, after = self._sum_for(index, old), self._sum_for(index, new)
            if before is not after:
                if before is not None:
                    before.add(bucket, -1)
                if after is not None:
                    after.add(bucket)
        self._r0, self._c0, self._c1 = new
        self._drop_before(new[0])

    def _drop_before(self, r0: int) -> None:
        for index in [i for i in self.buckets if i < r0]:
            del self.buckets[index]

    # --- ingestion ---------------------------------------------------------------------------
    def _prepare(
        self, now: float, ts: Sequence[float] | FloatArray, n: int
    ) -> Iterator[tuple[int, list[int]]]:
        """Advance to ``now``; yield (bucket index, positions) for events still in range."""
        self._advance(now)
        times = np.asarray(ts, dtype=np.float64)
        if times.ndim != 1 or times.size != n:
            raise ValueError(f"expected {n} timestamps, got shape {times.shape}")
        if n == 0:
            return
        if not np.isfinite(times).all():
            raise ValueError("timestamps must be finite")
        times = np.minimum(times, self._now)
        index = np.floor(times / self.config.bucket_s).astype(np.int64)
        keep = index >= self._r0
        self.late_dropped += int(n - keep.sum())
        order = np.flatnonzero(keep)
        if order.size == 0:
            return
        order = order[np.argsort(index[order], kind="stable")]
        splits = np.flatnonzero(np.diff(index[order])) + 1
        for group in np.split(order, splits):
            yield int(index[group[0]]), group.tolist()

    def _newest(self, topic: str, ts: Sequence[float] | FloatArray) -> None:
        if len(ts):
            newest = min(float(np.max(np.asarray(ts, dtype=np.float64))), self._now)
            if newest > self.newest_ts.get(topic, -math.inf):
                self.newest_ts[topic] = newest

    def _apply(self, index: int, delta: Tally) -> None:
        bucket = self.buckets.setdefault(index, Tally())
        bucket.add(delta)
        target = self._sum_for(index)
        if target is not None:
            target.add(delta)
        capacity = self.config.item_capacity
        if len(bucket.items) > 2 * capacity:
            ranked = sorted(bucket.items.items(), key=lambda kv: (-kv[1], kv[0]))
            dropped = Tally(items=dict(ranked[capacity:]))
            bucket.items = dict(ranked[:capacity])
            if target is not None:
                _merge(target.items, dropped.items, -1)

    def add_outcomes(
        self,
        now: float,
        ts: Sequence[float] | FloatArray,
        event_types: Sequence[str],
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        *,
        topic: str = "outcomes",
    ) -> None:
        """Count a batch of outcome events (parallel sequences, in processing order)."""
        n = len(event_types)
        if not len(user_ids) == len(item_ids) == n:
            raise ValueError("event_types, user_ids and item_ids must have the same length")
        groups = list(self._prepare(now, ts, n))
        if not groups:
            return
        kept = [i for _, positions in groups for i in positions]
        new_user = np.zeros(n, dtype=np.bool_)
        new_item = np.zeros(n, dtype=np.bool_)
        new_user[kept] = self.users_seen.check_and_add([user_ids[i] for i in kept])
        new_item[kept] = self.items_seen.check_and_add([item_ids[i] for i in kept])
        for index, positions in groups:
            size = len(positions)
            self._apply(
                index,
                Tally(
                    topics={topic: size},
                    types=dict(Counter(event_types[i] for i in positions)),
                    items=dict(Counter(item_ids[i] for i in positions)),
                    item_events=size,
                    new_items=int(new_item[positions].sum()),
                    user_events=size,
                    new_users=int(new_user[positions].sum()),
                ),
            )
        self._newest(topic, ts)

    def add_exposures(
        self,
        now: float,
        ts: Sequence[float] | FloatArray,
        surfaces: Sequence[str],
        variants: Sequence[str],
        shown: Sequence[int],
        *,
        topic: str = "exposures",
    ) -> None:
        """Count a batch of exposure events; ``shown`` is the number of items in each."""
        n = len(surfaces)
        if not len(variants) == len(shown) == n:
            raise ValueError("surfaces, variants and shown must have the same length")
        for index, positions in self._prepare(now, ts, n):
            impressions: Counter[str] = Counter()
            for i in positions:
                impressions[pair_key(surfaces[i], variants[i])] += int(shown[i])
            self._apply(index, Tally(topics={topic: len(positions)}, impressions=dict(impressions)))
        self._newest(topic, ts)

    def add_clicks(
        self,
        now: float,
        ts: Sequence[float] | FloatArray,
        surfaces: Sequence[str],
        variants: Sequence[str],
    ) -> None:
        """Count clicks joined to their exposure (surface and variant come from the exposure).

        The click events themselves are also outcomes: count them with :meth:`add_outcomes`.
        """
        n = len(surfaces)
        if len(variants) != n:
            raise ValueError("surfaces and variants must have the same length")
        for index, positions in self._prepare(now, ts, n):
            clicks = Counter(pair_key(surfaces[i], variants[i]) for i in positions)
            self._apply(index, Tally(clicks=dict(clicks)))

    def add_deadletters(
        self, now: float, ts: Sequence[float] | FloatArray, reasons: Sequence[str]
    ) -> None:
        """Count dead-lettered messages (``ts``: when they were dead-lettered)."""
        for index, positions in self._prepare(now, ts, len(reasons)):
            self._apply(index, Tally(deadletters=dict(Counter(reasons[i] for i in positions))))

    # --- queries -----------------------------------------------------------------------------
    def _covered(self, start: float, end: float) -> float:
        return max(0.0, end - max(start, self.started_at))

    def windows(self, now: float) -> WindowPair:
        """Advance to ``now`` and return copies of the current and reference windows."""
        self._advance(now)
        b = self.config.bucket_s
        cur_start, cur_end, ref_start = self._c0 * b, self._c1 * b, self._r0 * b
        return WindowPair(
            now=self._now,
            current=self._cur.copy(),
            reference=self._ref.copy(),
            current_start=cur_start,
            current_end=cur_end,
            reference_start=ref_start,
            current_s=self._covered(cur_start, cur_end),
            reference_s=self._covered(ref_start, cur_start),
            started_at=self.started_at,
        )

    def newest_event_age(self, now: float) -> dict[str, float]:
        """Seconds since the newest event time seen per topic (never negative)."""
        return {topic: max(0.0, now - ts) for topic, ts in self.newest_ts.items()}

    def recomputed(self) -> tuple[Tally, Tally]:
        """(current, reference) summed from the buckets from scratch (for checks and tests)."""
        cur, ref = Tally(), Tally()
        for index, bucket in self.buckets.items():
            if self._c0 <= index < self._c1:
                cur.add(bucket)
            elif self._r0 <= index < self._c0:
                ref.add(bucket)
        return cur, ref

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state, so a restarted worker keeps its reference window and seen-sets."""
        return {
            "version": _STATE_VERSION,
            "started_at": self.started_at,
            "now": self._now,
            "late_dropped": self.late_dropped,
            "newest_ts": dict(self.newest_ts),
            "buckets": {str(i): b.to_dict() for i, b in sorted(self.buckets.items())},
            "users_seen": self.users_seen.to_dict(),
            "items_seen": self.items_seen.to_dict(),
        }

    @classmethod
    def from_dict(cls, config: WindowConfig, data: Mapping[str, Any]) -> WindowAccumulator:
        """Restore from :meth:`to_dict`; raises :class:`ValueError` on a bad or foreign state."""
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported window state version {data.get('version')!r}")
        try:
            acc = cls(config, started_at=float(data["started_at"]))
            acc._now = float(data["now"])
            acc.late_dropped = int(data["late_dropped"])
            acc.newest_ts = {str(k): float(v) for k, v in data["newest_ts"].items()}
            acc.buckets = {int(i): Tally.from_dict(b) for i, b in data["buckets"].items()}
            acc.users_seen = RotatingBloomSet.from_dict(data["users_seen"])
            acc.items_seen = RotatingBloomSet.from_dict(data["items_seen"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad window state: {exc!r}") from exc
        acc._r0, acc._c0, acc._c1 = acc._bounds(acc._now)
        acc._drop_before(acc._r0)
        acc._rebuild()
        return acc
