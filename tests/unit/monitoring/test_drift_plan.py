"""The plans' drift thresholds: each crossed by a hand-computed stream, and just missed by another.

Every stream goes through a real :class:`WindowAccumulator` (10-s buckets, a 60-s current window
against the 120 s before it) and :func:`evaluate_drift` with the default plan thresholds
(KL 0.1, CTR drop 0.15 at z ≥ 2, volume change 0.3, cold-start change 0.25) and a minimum of 100
events per window. Reference window [T0, T0 + 120), current [T0 + 120, T0 + 180), evaluated at
T0 + 185.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from monitoring.drift import PLAN_SIGNALS, DriftSignal, DriftThresholds, evaluate_drift, smoothed_kl
from monitoring.levels import Level
from monitoring.windows import WindowAccumulator, WindowConfig

T0 = 1_700_000_000.0  # a multiple of 10
NOW = T0 + 185.0
CONFIG = WindowConfig(bucket_s=10, window_s=60, reference_windows=2, seen_capacity=100_000)
TH = DriftThresholds(min_events=100)
POOL_USERS = [f"u{i}" for i in range(50)]
POOL_ITEMS = ["a", "b", "c", "d"]


def _acc(started_at: float = T0 - 10_000) -> WindowAccumulator:
    acc = WindowAccumulator(CONFIG, started_at=started_at)
    # seen before the reference window: events from these ids are not cold start
    acc.users_seen.check_and_add(POOL_USERS)
    acc.items_seen.check_and_add(POOL_ITEMS)
    return acc


def _spread(start: float, seconds: float, n: int) -> list[float]:
    """``n`` event times evenly over [start, start + seconds)."""
    return [start + seconds * (i + 0.5) / n for i in range(n)]


def _outcomes(
    acc: WindowAccumulator,
    start: float,
    seconds: float,
    *,
    types: dict[str, int] | None = None,
    items: dict[str, int] | None = None,
    new_users: int = 0,
    n: int | None = None,
) -> None:
    """Outcome events over [start, start + seconds): ``types`` / ``items`` give the counts;
    the first ``new_users`` come from never-seen users, the rest from the seen pool."""
    if n is None:
        n = sum((types or items or {}).values())
    event_types = [t for t, c in (types or {"view": n}).items() for _ in range(c)]
    item_ids = [i for i, c in (items or {"a": n}).items() for _ in range(c)]
    assert len(event_types) == len(item_ids) == n
    users = [f"new-{start}-{i}" for i in range(new_users)]
    users += [POOL_USERS[i % len(POOL_USERS)] for i in range(n - new_users)]
    acc.add_outcomes(NOW, _spread(start, seconds, n), event_types, users, item_ids)


def _signal(acc: WindowAccumulator, signal: str, scope: str) -> DriftSignal:
    found = evaluate_drift(acc.windows(NOW), TH).get(signal, scope)
    assert found is not None, (signal, scope)
    return found


def _kl(current: Sequence[float], reference: Sequence[float]) -> float:
    """KL(p‖q) written out, with 0.5 added to every bin of both count vectors."""
    p = [(c + 0.5) / (sum(current) + 0.5 * len(current)) for c in current]
    q = [(r + 0.5) / (sum(reference) + 0.5 * len(reference)) for r in reference]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _assert_out(s: DriftSignal, expected: float, threshold: float) -> None:
    assert s.plan and s.evaluable and s.threshold == threshold
    assert s.value == pytest.approx(expected, rel=1e-9)
    assert s.value > threshold and s.level is Level.WARN and s.out


def _assert_within(s: DriftSignal, expected: float, threshold: float) -> None:
    assert s.plan and s.evaluable and s.threshold == threshold
    assert s.value == pytest.approx(expected, rel=1e-9)
    assert s.value < threshold and s.level is Level.OK and not s.out


# --- KL of the event-type mix ---------------------------------------------------------------
@pytest.mark.parametrize(("clicks", "out"), [(156, True), (150, False)])
def test_event_mix_kl(clicks: int, out: bool) -> None:
    # reference: 10 % clicks; current: 26 % (KL 0.1035) or 25 % (KL 0.0922)
    acc = _acc()
    _outcomes(acc, T0, 120, types={"view": 1080, "click": 120})
    _outcomes(acc, T0 + 120, 60, types={"view": 600 - clicks, "click": clicks})
    expected = _kl([clicks, 600 - clicks], [120, 1080])  # bins sorted: click, view
    assert expected == pytest.approx(0.10345 if out else 0.09223, abs=1e-5)
    s = _signal(acc, "event_mix_kl", "outcomes")
    (_assert_out if out else _assert_within)(s, expected, 0.1)
    assert "event mix KL" in s.cause and "largest change" in s.cause


# --- KL of the item-popularity mix -------------------------------------------------------------
@pytest.mark.parametrize(("new_item", "out"), [(20, True), (16, False)])
def test_items_kl(new_item: int, out: bool) -> None:
    # reference: a, b, c, d 300 each; current: a new item n takes 20 (or 16) of 600 events
    acc = _acc()
    _outcomes(acc, T0, 120, items=dict.fromkeys(POOL_ITEMS, 300))
    each = (600 - new_item) // 4
    _outcomes(acc, T0 + 120, 60, items={**dict.fromkeys(POOL_ITEMS, each), "n": new_item})
    # bins: a, b, c, d, n and the (empty) "other" bucket of the top-N projection
    expected = _kl([each] * 4 + [new_item, 0], [300] * 4 + [0, 0])
    assert expected == pytest.approx(0.11689 if out else 0.08816, abs=1e-5)
    s = _signal(acc, "items_kl", "outcomes")
    (_assert_out if out else _assert_within)(s, expected, 0.1)
    assert "gaining: n" in s.cause


def test_smoothed_kl_matches_the_written_out_formula_and_stays_finite() -> None:
    assert smoothed_kl([3, 0], [0, 5]) == pytest.approx(_kl([3, 0], [0, 5]), rel=1e-12)
    assert math.isfinite(smoothed_kl([100, 0], [0, 100]))
    assert smoothed_kl([7, 7], [1, 1]) == 0.0
    with pytest.raises(ValueError):
        smoothed_kl([1, 2], [1, 2], pseudo=0)


# --- interaction volume change ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "change", "out"),
    [(786, 0.31, True), (774, 0.29, False), (414, 0.31, True), (426, 0.29, False)],
)
def test_volume_change_both_ways(current: int, change: float, out: bool) -> None:
    # reference 1200 events in 120 s = 10/s; current 60 s at 13.1/s, 12.9/s, 6.9/s, 7.1/s
    acc = _acc()
    _outcomes(acc, T0, 120, n=1200)
    _outcomes(acc, T0 + 120, 60, n=current)
    s = _signal(acc, "volume_change", "outcomes")
    (_assert_out if out else _assert_within)(s, change, 0.3)
    assert ("+" if current > 600 else "-") in s.cause
    # the existing ×2 / ÷2 volume signal stays quiet
    assert _signal(acc, "volume_ratio", "outcomes").level is Level.OK


# --- new-user / new-item ratio change --------------------------------------------------------
@pytest.mark.parametrize(
    ("new", "change", "out"),
    [(76, 0.2666666667, True), (74, 0.2333333333, False), (44, 0.2666666667, True)],
)
def test_new_user_share_change(new: int, change: float, out: bool) -> None:
    # reference: 120 of 1200 events from never-seen users (10 %); current: 76, 74 or 44 of 600
    acc = _acc()
    _outcomes(acc, T0, 120, n=1200, new_users=120)
    _outcomes(acc, T0 + 120, 60, n=600, new_users=new)
    s = _signal(acc, "coldstart_change", "users")
    assert s.value == pytest.approx(abs((new / 600) / (120 / 1200) - 1), rel=1e-12)
    (_assert_out if out else _assert_within)(s, s.value, 0.25)
    assert s.value == pytest.approx(change, rel=1e-9)
    # the existing +10-point cold-start signal stays quiet
    assert _signal(acc, "coldstart_delta", "users").level is Level.OK


@pytest.mark.parametrize(("new_items", "out"), [(38, True), (37, False)])
def test_new_item_share_change(new_items: int, out: bool) -> None:
    # reference: 60 of 1200 events on never-seen items (5 %); current 38 of 600 (6.33 %, +26.7 %)
    # or 37 (6.17 %, +23.3 %)
    acc = _acc()
    fresh_ref = {f"r{i}": 1 for i in range(60)}
    _outcomes(acc, T0, 120, items={"a": 1140, **fresh_ref})
    fresh = {f"c{i}": 1 for i in range(new_items)}
    _outcomes(acc, T0 + 120, 60, items={"a": 600 - new_items, **fresh})
    s = _signal(acc, "coldstart_change", "items")
    expected = (new_items / 600) / (60 / 1200) - 1
    (_assert_out if out else _assert_within)(s, expected, 0.25)


def test_a_falling_new_share_waits_for_a_warm_seen_set() -> None:
    # started 60 s before the reference window: its seen-set may still be filling up
    acc = _acc(started_at=T0 - 60)
    _outcomes(acc, T0, 120, n=1200, new_users=120)
    _outcomes(acc, T0 + 120, 60, n=600, new_users=30)
    s = _signal(acc, "coldstart_change", "users")
    assert not s.evaluable and s.level is Level.OK and "warms up" in s.cause
    # a rise is evaluated at once
    rising = _acc(started_at=T0 - 60)
    _outcomes(rising, T0, 120, n=1200, new_users=120)
    _outcomes(rising, T0 + 120, 60, n=600, new_users=90)
    assert _signal(rising, "coldstart_change", "users").out


# --- CTR drop ---------------------------------------------------------------------------------
def _ctr_stream(acc: WindowAccumulator, ref: tuple[int, int], cur: tuple[int, int]) -> None:
    """(impressions, clicks) of home|B in the reference and the current window."""
    for start, seconds, (imp, clicks) in ((T0, 120, ref), (T0 + 120, 60, cur)):
        batches = 10  # exposures of imp / 10 items each, spread over the window
        acc.add_exposures(
            NOW, _spread(start, seconds, batches), ["home"] * batches, ["B"] * batches,
            [imp // batches] * batches,
        )  # fmt: skip
        acc.add_clicks(NOW, _spread(start, seconds, clicks), ["home"] * clicks, ["B"] * clicks)


@pytest.mark.parametrize(("clicks", "out"), [(504, True), (516, False)])
def test_ctr_drop(clicks: int, out: bool) -> None:
    # reference CTR 1200 / 24000 = 5 %; current 504 / 12000 = 4.2 % (−16 %) or 4.3 % (−14 %)
    acc = _acc()
    _ctr_stream(acc, (24_000, 1200), (12_000, clicks))
    s = _signal(acc, "ctr_drop", "home|B")
    expected = 1 - (clicks / 12_000) / 0.05
    (_assert_out if out else _assert_within)(s, expected, 0.15)
    assert s.significant  # z ≈ −3.4 and −2.9: past the plans' z of 2
    assert dict(s.labels) == {"surface": "home", "variant": "B"}
    # same quantity as the existing signal, which keeps its own 30 % threshold
    existing = _signal(acc, "ctr_rel_drop", "home|B")
    assert existing.value == s.value and existing.level is Level.OK


def test_ctr_drop_needs_significance() -> None:
    # −20 % on 1,000 vs 2,000 impressions: z ≈ −1.1, not out
    acc = _acc()
    _ctr_stream(acc, (2000, 100), (1000, 40))
    s = _signal(acc, "ctr_drop", "home|B")
    assert s.value == pytest.approx(0.2) and not s.significant and not s.out
    assert s.level is Level.OK


def test_a_drop_absorbed_by_the_reference_still_reports_the_current_ctr() -> None:
    # the reference window has too few clicks to compare (CTR 1 % for 120 s: 24 < 30), but
    # the current window has enough impressions: its CTR goes with the signal for the
    # re-tune decision, which compares it with the CTR before the drop
    acc = _acc()
    _ctr_stream(acc, (2400, 24), (1200, 12))
    s = _signal(acc, "ctr_drop", "home|B")
    assert not s.evaluable and "24 reference clicks < 30" in s.cause
    assert s.stats == {"ctr": 0.01}


def test_every_plan_signal_is_reported_when_there_is_too_little_data() -> None:
    acc = _acc()
    _outcomes(acc, T0, 120, n=99)
    _outcomes(acc, T0 + 120, 60, n=99)
    _ctr_stream(acc, (500, 50), (500, 10))
    report = evaluate_drift(acc.windows(NOW), TH)
    plan = [s for s in report.signals if s.plan]
    assert {s.signal for s in plan} == set(PLAN_SIGNALS)
    assert all(not s.evaluable and s.level is Level.OK for s in plan)
    assert report.plan_out == []


def test_plan_thresholds_come_from_the_settings() -> None:
    from core.settings import load_settings

    th = DriftThresholds.from_settings(load_settings(drift_plan_kl=0.2, drift_plan_ctr_z=3.0))
    assert (th.plan_kl, th.plan_ctr_z) == (0.2, 3.0)
    defaults = DriftThresholds()
    assert (defaults.plan_kl, defaults.plan_ctr_drop) == (0.1, 0.15)
    assert (defaults.plan_volume_change, defaults.plan_coldstart_change) == (0.3, 0.25)
    with pytest.raises(ValueError):
        DriftThresholds(plan_ctr_drop=1.0)
