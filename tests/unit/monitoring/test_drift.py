"""Drift statistics against hand-computed values, and the drift report's guards."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitoring.drift import (
    OTHER,
    DriftThresholds,
    coldstart_ratio,
    ctr_change,
    evaluate_drift,
    js,
    kl,
    psi,
    topn_with_other,
    volume_ratio,
)
from monitoring.levels import Level
from monitoring.windows import Tally, WindowPair

LN2 = math.log(2)


# --- psi / kl / js --------------------------------------------------------------------------
def test_psi_hand_computed() -> None:
    # p = (.5, .5), q = (.25, .75):  .25·ln(.5/.25) + (−.25)·ln(.5/.75)
    expected = 0.25 * math.log(2) - 0.25 * math.log(0.5 / 0.75)
    assert expected == pytest.approx(0.2746531, abs=1e-7)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-12)
    # inputs are normalised: counts give the same value
    assert psi([10, 10], [5, 15]) == pytest.approx(expected, rel=1e-12)
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_floors_empty_bins_at_eps() -> None:
    # p = (1, 0) floored at .01 → (1/1.01, .01/1.01); q = (.5, .5)
    p0, p1 = 1 / 1.01, 0.01 / 1.01
    expected = (p0 - 0.5) * math.log(p0 / 0.5) + (p1 - 0.5) * math.log(p1 / 0.5)
    assert expected == pytest.approx(2.256990, abs=1e-6)
    assert psi([1, 0], [0.5, 0.5], eps=0.01) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi([1, 0], [0, 1]))


def test_kl_hand_computed() -> None:
    # .5·ln(.5/.25) + .5·ln(.5/.75) = .5·ln2 + .5·ln(2/3)
    expected = 0.5 * LN2 + 0.5 * math.log(2 / 3)
    assert expected == pytest.approx(0.1438410, abs=1e-7)
    assert kl([0.5, 0.5], [0.25, 0.75]) == pytest.approx(expected, rel=1e-12)
    # bins where p = 0 contribute nothing: KL((1,0)‖(.5,.5)) = ln 2
    assert kl([1, 0], [0.5, 0.5]) == pytest.approx(LN2, rel=1e-12)
    # asymmetric
    assert kl([0.25, 0.75], [0.5, 0.5]) != pytest.approx(kl([0.5, 0.5], [0.25, 0.75]))


def test_js_hand_computed_and_bounded() -> None:
    # p = (.5, .5), q = (1, 0), m = (.75, .25)
    # KL2(p‖m) = .5·log2(.5/.75) + .5·log2(.5/.25);  KL2(q‖m) = log2(1/.75)
    kl_pm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2)
    kl_qm = math.log2(1 / 0.75)
    expected = (kl_pm + kl_qm) / 2
    assert expected == pytest.approx(0.3112781, abs=1e-7)
    assert js([0.5, 0.5], [1, 0]) == pytest.approx(expected, rel=1e-12)
    assert js([1, 0], [0.5, 0.5]) == pytest.approx(expected, rel=1e-12)  # symmetric
    assert js([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint supports: the maximum
    assert js([0.1, 0.2, 0.7], [0.1, 0.2, 0.7]) == 0.0


def test_js_of_traffic_moving_to_new_items_matches_the_documented_threshold() -> None:
    # a fraction f of the traffic moves to items the reference never had
    q = np.array([0.5, 0.3, 0.2, 0.0])
    for f, lo, hi in ((0.2, 0.10, 0.12), (0.8, 0.60, 0.62)):
        p = np.append(q[:3] * (1 - f), f)
        assert lo < js(p, q) < hi


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([], []),
        ([0.5, 0.5], [1.0]),
        ([-1, 2], [0.5, 0.5]),
        ([0, 0], [1, 1]),
        ([math.nan, 1], [1, 1]),
    ],
)
def test_bad_distributions_raise(p: list[float], q: list[float]) -> None:
    for fn in (psi, kl, js):
        with pytest.raises(ValueError):
            fn(p, q)


# --- top-N with other ----------------------------------------------------------------------
def test_topn_with_other_aligns_union_of_heads_and_other() -> None:
    cur = {"a": 5, "b": 3, "c": 1, "d": 1}
    ref = {"a": 2, "e": 6, "b": 1}
    top = topn_with_other(cur, ref, 1, current_total=12, reference_total=10)
    # top-1 of current is a, of reference e; other = total − kept
    assert top.keys == ("a", "e", OTHER)
    assert top.current.tolist() == [5, 0, 12 - 5]
    assert top.reference.tolist() == [2, 6, 10 - 8]


def test_topn_with_other_defaults_and_ties() -> None:
    top = topn_with_other({"y": 1, "x": 1, "z": 1}, {"x": 2}, 1)
    assert top.keys == ("x", OTHER)  # tie broken by key
    assert top.current.tolist() == [1, 2]
    assert top.reference.tolist() == [2, 0]
    with pytest.raises(ValueError):
        topn_with_other({"a": 5}, {"a": 1}, 1, current_total=3)
    with pytest.raises(ValueError):
        topn_with_other({"a": 5}, {"a": 1}, 0)


# --- volume, cold start, CTR ------------------------------------------------------------------
def test_volume_and_coldstart() -> None:
    # 300 events in 300 s vs 1200 in 3600 s: 1/s vs 1/3 per s
    assert volume_ratio(300, 300, 1200, 3600) == pytest.approx(3.0)
    assert volume_ratio(0, 300, 1200, 3600) == 0.0
    with pytest.raises(ValueError):
        volume_ratio(1, 300, 0, 3600)
    assert coldstart_ratio(30, 600) == pytest.approx(0.05)
    for new, total in ((1, 0), (5, 4), (-1, 3)):
        with pytest.raises(ValueError):
            coldstart_ratio(new, total)


def test_ctr_change_hand_computed() -> None:
    # 50/2000 = 2.5 % vs 600/12000 = 5 %; pooled 650/14000
    pooled = 650 / 14000
    se = math.sqrt(pooled * (1 - pooled) * (1 / 2000 + 1 / 12000))
    change = ctr_change(50, 2000, 600, 12000)
    assert change.current == pytest.approx(0.025)
    assert change.reference == pytest.approx(0.05)
    assert change.relative_change == pytest.approx(-0.5)
    assert change.z == pytest.approx((0.025 - 0.05) / se)
    assert change.z == pytest.approx(-4.9194, abs=1e-3)
    with pytest.raises(ValueError):
        ctr_change(1, 10, 0, 10)  # no reference click: relative change undefined


# --- the report -------------------------------------------------------------------------------
def _pair(current: Tally, reference: Tally, *, ref_s: float = 3600.0) -> WindowPair:
    return WindowPair(
        now=10_000.0,
        current=current,
        reference=reference,
        current_start=9_690.0,
        current_end=9_990.0,
        reference_start=6_090.0,
        current_s=300.0,
        reference_s=ref_s,
    )


def _outcomes(n: int, *, click_share: float = 0.1, items: dict[str, int] | None = None) -> Tally:
    clicks = round(n * click_share)
    return Tally(
        topics={"outcomes": n},
        types={"view": n - clicks, "click": clicks},
        items=items or {"a": n // 2, "b": n // 4},
        item_events=n,
        new_items=n // 100,
        user_events=n,
        new_users=n // 20,
    )


def test_stationary_windows_report_ok() -> None:
    report = evaluate_drift(_pair(_outcomes(1000), _outcomes(12000)), DriftThresholds())
    volume = report.get("volume_ratio", "outcomes")
    assert volume is not None and volume.evaluable
    assert volume.value == pytest.approx(1.0)
    assert report.get("event_mix_psi", "outcomes").value == pytest.approx(0.0)  # type: ignore[union-attr]
    assert report.get("items_js", "outcomes").value == pytest.approx(0.0)  # type: ignore[union-attr]
    assert report.get("coldstart_delta", "users").value == pytest.approx(0.0)  # type: ignore[union-attr]
    assert report.level is Level.OK
    assert all(s.evaluable for s in report.signals)


def test_volume_alerts_both_ways() -> None:
    th = DriftThresholds()
    report = evaluate_drift(_pair(_outcomes(3000), _outcomes(12000)), th)
    up = report.get("volume_ratio", "outcomes")
    assert up is not None and up.level is Level.WARN
    assert up.value == pytest.approx(3.0) and up.direction == "above" and up.threshold == 2.0
    down = evaluate_drift(_pair(_outcomes(400), _outcomes(12000)), th).get(
        "volume_ratio", "outcomes"
    )
    assert down is not None and down.level is Level.WARN
    assert down.value == pytest.approx(0.4) and down.direction == "below"
    assert down.threshold == pytest.approx(0.5)


def test_mix_items_coldstart_signals() -> None:
    th = DriftThresholds()
    shifted = _outcomes(1000, click_share=0.6, items={"new1": 600, "a": 200})
    shifted.new_users = 400
    report = evaluate_drift(_pair(shifted, _outcomes(12000)), th)
    mix = report.get("event_mix_psi", "outcomes")
    # (.4 − .9)·ln(.4/.9) + (.6 − .1)·ln(.6/.1)
    assert mix is not None
    assert mix.value == pytest.approx(-0.5 * math.log(0.4 / 0.9) + 0.5 * math.log(6), rel=1e-3)
    assert mix.level is Level.WARN
    items = report.get("items_js", "outcomes")
    assert items is not None and items.level is Level.WARN and "new1" in items.cause
    users = report.get("coldstart_delta", "users")
    assert users is not None and users.value == pytest.approx(0.4 - 0.05)
    assert users.level is Level.WARN
    assert report.get("coldstart_delta", "items").level is Level.OK  # type: ignore[union-attr]


def test_min_events_guard() -> None:
    report = evaluate_drift(_pair(_outcomes(499), _outcomes(12000)), DriftThresholds())
    for signal in ("event_mix_psi", "items_js"):
        s = report.get(signal, "outcomes")
        assert s is not None and not s.evaluable and s.level is Level.OK
        assert s.cause.startswith("insufficient data")
    # a short reference (monitor just started) does not give a volume ratio
    short = evaluate_drift(_pair(_outcomes(3000), _outcomes(12000), ref_s=200), DriftThresholds())
    assert not short.get("volume_ratio", "outcomes").evaluable  # type: ignore[union-attr]


def _ctr_tally(imp: int, clicks: int) -> Tally:
    return Tally(impressions={"home|B": imp}, clicks={"home|B": clicks})


def test_ctr_drop_needs_size_and_significance() -> None:
    th = DriftThresholds()
    halved = evaluate_drift(_pair(_ctr_tally(2000, 50), _ctr_tally(12000, 600)), th)
    s = halved.get("ctr_rel_drop", "home|B")
    assert s is not None and s.level is Level.WARN and s.guards_passed
    assert s.value == pytest.approx(0.5)
    assert dict(s.labels) == {"surface": "home", "variant": "B"}
    # same relative drop on few impressions: below the minimum sample
    small = evaluate_drift(_pair(_ctr_tally(900, 22), _ctr_tally(12000, 600)), th)
    s = small.get("ctr_rel_drop", "home|B")
    assert s is not None and not s.evaluable and s.level is Level.OK
    # big relative drop but not significant (z ≈ −1.6): value past threshold, level OK
    weak = evaluate_drift(_pair(_ctr_tally(1000, 3), _ctr_tally(12000, 90)), th)
    s = weak.get("ctr_rel_drop", "home|B")
    assert s is not None and s.evaluable and s.value >= th.ctr_rel_drop
    assert s.level is Level.OK and not s.significant and not s.guards_passed
    # a rise is never an alert
    up = evaluate_drift(_pair(_ctr_tally(2000, 200), _ctr_tally(12000, 600)), th)
    assert up.get("ctr_rel_drop", "home|B").level is Level.OK  # type: ignore[union-attr]


def test_deadletter_rate_warn_and_crit() -> None:
    th = DriftThresholds()
    cur = _outcomes(1000)
    cur.deadletters = {"invalid": 20}
    s = evaluate_drift(_pair(cur, _outcomes(12000)), th).get("deadletter_rate", "all")
    assert s is not None and s.value == pytest.approx(20 / 1020) and s.level is Level.WARN
    cur.deadletters = {"invalid": 60, "not_json": 10}
    s = evaluate_drift(_pair(cur, _outcomes(12000)), th).get("deadletter_rate", "all")
    assert s is not None and s.level is Level.CRIT and s.crit_threshold == 0.05
    assert "invalid 60" in s.cause


def test_thresholds_from_settings_and_validation() -> None:
    from core.settings import load_settings

    th = DriftThresholds.from_settings(load_settings(drift_items_js=0.2, drift_ctr_z=4.0))
    assert th.items_js == 0.2 and th.ctr_z == 4.0
    assert DriftThresholds.from_settings(load_settings()) == DriftThresholds()
    with pytest.raises(ValueError):
        DriftThresholds(deadletter_warn=0.1, deadletter_crit=0.05)
