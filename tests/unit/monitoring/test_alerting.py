"""Alert state machine: minimum duration, hysteresis, escalation, resolve, no storms."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest

from monitoring.alerting import AlertManager, AlertPolicy, Observation, make_alert_id
from monitoring.levels import Direction, Level, level_for
from schemas.events import Alert, Severity, encode_event

T0 = 1_700_000_000.0
POLICY = AlertPolicy(min_duration_s=60, clear_ratio=0.8, stale_s=600)


def obs(
    value: float,
    *,
    warn: float = 100.0,
    crit: float | None = 1000.0,
    direction: Direction = "above",
    kind: str = "consumer_lag",
    labels: dict[str, str] | None = None,
    evaluable: bool = True,
) -> Observation:
    return Observation(
        kind=kind,
        value=value,
        level=level_for(value, warn, crit, direction),
        warn=warn,
        crit=crit,
        direction=direction,
        labels=labels if labels is not None else {"topic": "outcomes"},
        window_s=300,
        cause=f"value {value}",
        evaluable=evaluable,
    )


def run(
    manager: AlertManager,
    values: list[float],
    *,
    start: float = T0,
    step: float = 10.0,
    **kw: Any,
) -> list[tuple[float, Alert]]:
    """Feed one value per step; return (time offset, event) pairs."""
    out = []
    for i, value in enumerate(values):
        now = start + i * step
        for event in manager.evaluate(now, [obs(value, **kw)]):
            out.append((now - T0, event))
    return out


def test_fires_only_after_min_duration() -> None:
    manager = AlertManager(POLICY)
    events = run(manager, [150.0] * 20)  # t = 0 … 190
    assert [(t, e.state, e.severity) for t, e in events] == [(60.0, "firing", Severity.WARN)]
    alert = events[0][1]
    assert alert.alert_id == "consumer_lag:topic=outcomes"
    assert alert.kind == "consumer_lag" and alert.labels == {"topic": "outcomes"}
    assert alert.first_seen.timestamp() == T0 and alert.ts.timestamp() == T0 + 60
    assert (alert.value, alert.threshold, alert.window_s) == (150.0, 100.0, 300)
    assert alert.cause == "value 150.0"
    assert [a.alert_id for a in manager.firing()] == ["consumer_lag:topic=outcomes"]
    assert manager.firing_counts() == {("consumer_lag", "warn"): 1}
    assert b'"schema":"alert.v1"' in encode_event(alert)


def test_a_dip_below_threshold_resets_pending() -> None:
    manager = AlertManager(POLICY)
    values = [150.0] * 6 + [50.0] + [150.0] * 10  # dip at t = 60
    events = run(manager, values)
    assert [(t, e.state) for t, e in events] == [(130.0, "firing")]
    assert events[0][1].first_seen.timestamp() == T0 + 70


def test_hysteresis_and_resolve_after_min_duration() -> None:
    manager = AlertManager(POLICY)
    values = (
        [150.0] * 7  # fires at 60
        + [90.0] * 30  # below threshold, above clear point (80): stays firing
        + [70.0] * 5
        + [85.0]  # cleared for 50 s only, then back in the band
        + [70.0] * 7  # cleared for 60 s → resolved
        + [70.0] * 10
    )
    events = run(manager, values)
    assert [e.state for _, e in events] == ["firing", "resolved"]
    t_resolved, resolved = events[1]
    assert t_resolved == (7 + 30 + 6 + 6) * 10
    assert resolved.value == 70.0 and resolved.severity is Severity.WARN
    assert resolved.first_seen.timestamp() == T0
    assert resolved.cause.startswith("cleared")
    assert manager.firing() == [] and manager.pending() == []


def test_escalation_to_crit_emits_one_update_and_no_deescalation() -> None:
    manager = AlertManager(POLICY)
    values = [150.0] * 10 + [2000.0] * 10 + [500.0] * 10 + [2000.0] * 10 + [10.0] * 10
    events = run(manager, values)
    summary = [(t, e.state, e.severity) for t, e in events]
    assert summary == [
        (60.0, "firing", Severity.WARN),
        (160.0, "firing", Severity.CRIT),  # CRIT from t = 100, held 60 s
        (460.0, "resolved", Severity.CRIT),  # cleared from t = 400, held 60 s
    ]
    assert events[1][1].threshold == 1000.0
    assert events[1][1].first_seen == events[0][1].first_seen


def test_crit_from_the_start_fires_once_as_crit() -> None:
    manager = AlertManager(POLICY)
    events = run(manager, [5000.0] * 10)
    assert [(t, e.state, e.severity) for t, e in events] == [(60.0, "firing", Severity.CRIT)]


def test_low_side_threshold() -> None:
    manager = AlertManager(POLICY)
    kw: dict[str, Any] = {"warn": 0.5, "crit": None, "direction": "below", "kind": "drift_volume"}
    # 0.4 ≤ 0.5 fires; 0.6 is inside the band (clear point 0.5 / 0.8 = 0.625); 1.0 clears
    events = run(manager, [0.4] * 8 + [0.6] * 20 + [1.0] * 7, **kw)
    assert [(t, e.state) for t, e in events] == [(60.0, "firing"), (340.0, "resolved")]


def test_no_storm_when_the_value_flaps() -> None:
    manager = AlertManager(POLICY)
    # flapping across the threshold faster than min_duration never fires
    assert run(manager, [150.0, 50.0] * 360) == []
    # once firing, flapping between the threshold and the clear point never resolves
    events = run(manager, [150.0] * 7 + [150.0, 85.0] * 360, start=T0 + 10_000)
    assert [e.state for _, e in events] == ["firing"]


def test_noisy_value_around_the_threshold_gives_few_alternating_episodes() -> None:
    # mean-reverting noise around the threshold (log-space Ornstein-Uhlenbeck, sd ≈ 0.32)
    rng = np.random.default_rng(3)
    x = np.empty(20_000)
    x[0] = 0.0
    for i in range(1, x.size):
        x[i] = x[i - 1] - 0.05 * x[i - 1] + rng.normal(0, 0.1)
    values = list(100 * np.exp(x))
    manager = AlertManager(POLICY)
    events = run(manager, values, crit=None)
    states = [e.state for _, e in events]
    assert len(events) >= 4
    assert states[: len(states) // 2 * 2] == ["firing", "resolved"] * (len(states) // 2)
    # each episode lasts at least min_duration; a new one needs min_duration pending again
    times = [t for t, _ in events]
    assert all(b - a >= 60 for a, b in itertools.pairwise(times))
    crossings = int(np.sum(np.diff(np.array(values) >= 100) != 0))
    assert len(events) < crossings / 5


def test_not_evaluable_observations_hold_state_and_stale_alerts_resolve() -> None:
    manager = AlertManager(POLICY)
    assert [e.state for _, e in run(manager, [150.0] * 7)] == ["firing"]  # last seen at 60
    # no information: nothing changes (not resolved, not re-fired)
    for now in np.arange(T0 + 70, T0 + 660, 10.0):
        assert manager.evaluate(float(now), [obs(float("nan"), evaluable=False)]) == []
    assert len(manager.firing()) == 1
    # not observed for stale_s → resolved once, with the reason
    events = manager.evaluate(T0 + 660, [])
    assert [e.state for e in events] == ["resolved"]
    assert "no longer observed" in events[0].cause
    assert manager.evaluate(T0 + 2000, []) == []
    # a pending alert that goes unobserved is dropped silently
    manager.evaluate(T0 + 3000, [obs(150.0)])
    assert len(manager.pending()) == 1
    assert manager.evaluate(T0 + 3000 + 600, []) == []
    assert manager.pending() == []


def test_state_survives_a_restart_without_refiring() -> None:
    manager = AlertManager(POLICY)
    run(manager, [150.0] * 8)  # firing since 60
    state = json.loads(json.dumps(manager.to_dict()))
    restarted = AlertManager.from_dict(POLICY, state)
    assert [a.alert_id for a in restarted.firing()] == ["consumer_lag:topic=outcomes"]
    # still firing after the restart: no new firing event; it resolves normally
    events = run(restarted, [150.0] * 5 + [10.0] * 7, start=T0 + 80)
    assert [(e.state, e.first_seen.timestamp()) for _, e in events] == [("resolved", T0)]
    # a pending condition keeps its start time across the restart
    pending = AlertManager(POLICY)
    run(pending, [150.0] * 3)  # pending since 0
    again = AlertManager.from_dict(POLICY, pending.to_dict())
    assert [e.state for e in again.evaluate(T0 + 60, [obs(150.0)])] == ["firing"]


def test_bad_input_and_state_raise() -> None:
    manager = AlertManager(POLICY)
    with pytest.raises(ValueError, match="two observations"):
        manager.evaluate(T0, [obs(1.0), obs(2.0)])
    with pytest.raises(ValueError):
        AlertManager.from_dict(POLICY, {"version": 2})
    with pytest.raises(ValueError):
        AlertManager.from_dict(POLICY, {"version": 1, "alerts": {"x": {"alert_id": "x"}}})
    with pytest.raises(ValueError):
        AlertPolicy(clear_ratio=1.5)
    with pytest.raises(ValueError):
        level_for(5, warn=10, crit=5)


def test_zero_min_duration_fires_and_resolves_immediately() -> None:
    manager = AlertManager(AlertPolicy(min_duration_s=0, clear_ratio=0.8, stale_s=60))
    events = run(manager, [150.0, 150.0, 10.0])
    assert [(t, e.state) for t, e in events] == [(0.0, "firing"), (20.0, "resolved")]


def test_alert_ids_are_stable_and_bounded() -> None:
    assert make_alert_id("drift_items", {}) == "drift_items"
    assert make_alert_id("drift_ctr", {"variant": "B", "surface": "home"}) == (
        "drift_ctr:surface=home,variant=B"
    )
    long_id = make_alert_id("drift_ctr", {"surface": "x" * 200})
    assert len(long_id) <= 128 and long_id.startswith("drift_ctr:")
    assert long_id == make_alert_id("drift_ctr", {"surface": "x" * 200})
    # the long id still yields a valid alert.v1 event
    manager = AlertManager(AlertPolicy(min_duration_s=0))
    (event,) = manager.evaluate(T0, [obs(150.0, kind="drift_ctr", labels={"surface": "x" * 200})])
    assert event.alert_id == long_id
    assert Level.WARN.label == "WARN"
