"""Window accumulator: bucketing, window boundaries, bounded memory, persistence."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from monitoring.seen import RotatingBloomSet
from monitoring.windows import Tally, WindowAccumulator, WindowConfig

T0 = 1_700_000_000.0  # a multiple of 10
SMALL = WindowConfig(bucket_s=10, window_s=30, reference_windows=2, seen_capacity=10_000)


def _views(acc: WindowAccumulator, now: float, ts: list[float]) -> None:
    n = len(ts)
    acc.add_outcomes(now, ts, ["view"] * n, [f"u{i}" for i in range(n)], ["a"] * n)


def test_current_and_reference_windows_cover_closed_buckets() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    # one event per bucket for 12 buckets: bucket k holds ts T0 + 10k + 1
    now = T0 + 125.0  # bucket 12 is filling
    _views(acc, now, [T0 + 10 * k + 1 for k in range(12)])
    pair = acc.windows(now)
    # current = buckets 9, 10, 11; reference = buckets 3..8; older ones were dropped
    assert (pair.current_start, pair.current_end) == (T0 + 90, T0 + 120)
    assert pair.reference_start == T0 + 30
    assert pair.current.topics == {"outcomes": 3}
    assert pair.reference.topics == {"outcomes": 6}
    assert acc.late_dropped == 3  # buckets 0..2 are older than the reference
    assert (pair.current_s, pair.reference_s) == (30, 60)


def test_in_progress_bucket_and_future_timestamps() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    now = T0 + 55.0
    _views(acc, now, [T0 + 52, T0 + 500])  # the second is clamped to now
    assert acc.windows(now).current.topics == {}
    assert acc.newest_ts["outcomes"] == now
    pair = acc.windows(T0 + 60)
    assert pair.current.topics == {"outcomes": 2}
    assert acc.newest_event_age(T0 + 70) == {"outcomes": 15.0}


def test_late_events_land_in_their_window() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    now = T0 + 200
    acc.windows(now)
    _views(acc, now, [T0 + 175, T0 + 120, T0 + 10])  # current, reference, too old
    pair = acc.windows(now)
    assert pair.current.topics == {"outcomes": 1}
    assert pair.reference.topics == {"outcomes": 1}
    assert acc.late_dropped == 1


def test_coverage_grows_from_start() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0 + 5)
    assert acc.windows(T0 + 20).reference_s == 0
    pair = acc.windows(T0 + 60)
    assert (pair.current_s, pair.reference_s) == (30, 25)
    pair = acc.windows(T0 + 500)
    assert (pair.current_s, pair.reference_s) == (30, 60)


def test_incremental_sums_equal_recomputed_sums() -> None:
    rng = np.random.default_rng(7)
    cfg = WindowConfig(bucket_s=10, window_s=50, reference_windows=3, item_capacity=3)
    acc = WindowAccumulator(cfg, started_at=T0)
    now = T0
    for _ in range(400):
        now += float(rng.choice([0.0, 3.0, 10.0, 47.0, 600.0], p=[0.2, 0.4, 0.3, 0.08, 0.02]))
        n = int(rng.integers(0, 30))
        ts = now - rng.exponential(60, n)
        items = [f"i{k}" for k in rng.zipf(1.5, n)]
        users = [f"u{k}" for k in rng.integers(0, 50, n)]
        types = list(rng.choice(["view", "click"], n))
        acc.add_outcomes(now, ts, types, users, items)
        m = int(rng.integers(0, 5))
        acc.add_exposures(now, now - rng.exponential(20, m), ["home"] * m, ["A"] * m, [3] * m)
        acc.add_clicks(now, now - rng.exponential(20, m), ["home"] * m, ["A"] * m)
        acc.add_deadletters(now, now - rng.exponential(20, m), ["invalid"] * m)
        if rng.random() < 0.5:
            pair = acc.windows(now)
            cur, ref = acc.recomputed()
            assert pair.current == cur
            assert pair.reference == ref
            assert len(acc.buckets) <= cfg.window_buckets + cfg.reference_buckets + 1


def test_items_are_trimmed_but_totals_stay_exact() -> None:
    cfg = WindowConfig(bucket_s=10, window_s=10, reference_windows=1, item_capacity=2)
    acc = WindowAccumulator(cfg, started_at=T0)
    items = ["a"] * 5 + ["b"] * 4 + ["c", "d", "e", "f"]
    n = len(items)
    acc.add_outcomes(T0 + 1, [T0 + 1] * n, ["view"] * n, ["u"] * n, items)
    bucket = acc.buckets[round(T0 / 10)]
    # 6 distinct > 2 × capacity → keep the 2 largest; the rest is "other" mass
    assert bucket.items == {"a": 5, "b": 4}
    assert bucket.item_events == n
    pair = acc.windows(T0 + 10)
    assert pair.current.items == {"a": 5, "b": 4}
    assert pair.current.item_events == n


def test_cold_start_counts_first_occurrences() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    acc.add_outcomes(T0 + 1, [T0 + 1] * 3, ["view"] * 3, ["u1", "u1", "u2"], ["a", "b", "a"])
    acc.add_outcomes(T0 + 2, [T0 + 2] * 2, ["view"] * 2, ["u2", "u3"], ["c", "a"])
    cur = acc.windows(T0 + 10).current
    assert (cur.new_users, cur.user_events) == (3, 5)
    assert (cur.new_items, cur.item_events) == (3, 5)


def test_ctr_and_deadletter_counters() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    acc.add_exposures(T0 + 1, [T0 + 1] * 3, ["home", "home", "pdp"], ["A", "B", "A"], [10, 5, 2])
    acc.add_clicks(T0 + 2, [T0 + 2] * 2, ["home", "home"], ["A", "A"])
    acc.add_deadletters(T0 + 3, [T0 + 3] * 2, ["invalid", "not_json"])
    cur = acc.windows(T0 + 10).current
    assert cur.impressions == {"home|A": 10, "home|B": 5, "pdp|A": 2}
    assert cur.clicks == {"home|A": 2}
    assert cur.topics == {"exposures": 3}
    assert (cur.deadletter_total, cur.valid_total) == (2, 3)


def test_bad_input_raises() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    with pytest.raises(ValueError, match="same length"):
        acc.add_outcomes(T0, [T0], ["view"], ["u"], [])
    with pytest.raises(ValueError, match="timestamps"):
        acc.add_outcomes(T0, [T0, T0], ["view"], ["u"], ["a"])
    with pytest.raises(ValueError, match="finite"):
        acc.add_deadletters(T0, [float("nan")], ["x"])
    with pytest.raises(ValueError):
        WindowConfig(bucket_s=10, window_s=25)
    with pytest.raises(ValueError):
        WindowConfig(reference_windows=0)


def test_bloom_set_no_false_negatives_and_bounded_false_positives() -> None:
    seen = RotatingBloomSet(capacity=40_000, fp_rate=0.01)
    first = [f"user-{i}" for i in range(15_000)]
    assert seen.check_and_add(first).mean() > 0.99  # a few false positives while filling
    assert not seen.check_and_add(first).any()  # no false negatives
    fresh = [f"other-{i}" for i in range(20_000)]
    fp = 1 - seen.check_and_add(fresh).mean()
    assert fp < 0.02
    assert seen.bits * 2 // 8 < 1.3 * 40_000  # ≈ 1.2 bytes per remembered id at 1 %


def test_bloom_set_rotation_forgets_old_ids_but_keeps_active_ones() -> None:
    seen = RotatingBloomSet(capacity=2_000, fp_rate=0.001)
    old = [f"old-{i}" for i in range(500)]
    active = [f"active-{i}" for i in range(100)]
    seen.check_and_add(old + active)
    for gen in range(3):  # three more generations of new ids; "active" is seen each time
        seen.check_and_add([f"g{gen}-{i}" for i in range(1000)])
        assert not seen.check_and_add(active).any()
    assert seen.check_and_add(old).mean() > 0.95  # forgotten: new again


def test_persistence_round_trip() -> None:
    acc = WindowAccumulator(SMALL, started_at=T0)
    _views(acc, T0 + 35, [T0 + 5, T0 + 15, T0 + 33])
    acc.add_exposures(T0 + 35, [T0 + 31], ["home"], ["A"], [4])
    state = json.loads(json.dumps(acc.to_dict()))
    restored = WindowAccumulator.from_dict(SMALL, state)
    assert restored.windows(T0 + 40) == acc.windows(T0 + 40)
    # the restored seen-sets remember u0 and item a
    assert restored.users_seen.check_and_add(["u0", "zz"]).tolist() == [False, True]
    assert restored.items_seen.check_and_add(["a", "zz"]).tolist() == [False, True]
    with pytest.raises(ValueError):
        WindowAccumulator.from_dict(SMALL, {"version": 99})
    broken = copy.deepcopy(state)
    del broken["users_seen"]["bits"]
    with pytest.raises(ValueError):
        WindowAccumulator.from_dict(SMALL, broken)


def test_tally_add_subtract_round_trip() -> None:
    a = Tally(topics={"outcomes": 3}, items={"x": 2}, item_events=3, clicks={"h|A": 1})
    b = Tally(topics={"outcomes": 1}, items={"x": 1, "y": 1}, item_events=2)
    total = a.copy()
    total.add(b)
    assert total.items == {"x": 3, "y": 1}
    total.add(b, -1)
    assert total == a
    assert Tally.from_dict(json.loads(json.dumps(a.to_dict()))) == a
