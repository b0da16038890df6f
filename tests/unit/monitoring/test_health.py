"""Status lines and exit codes of ``streamrec status``."""

from __future__ import annotations

import math

import pytest

from monitoring.alerting import AlertManager, AlertPolicy, Observation
from monitoring.drift import DriftReport, DriftSignal
from monitoring.health import HealthThresholds, evaluate_health
from monitoring.levels import Level

TH = HealthThresholds()


def test_empty_report_is_ok() -> None:
    report = evaluate_health(TH)
    assert report.lines == () and report.exit_code == 0
    assert report.render() == "overall: OK"


def test_lag_lines_per_topic_use_the_worst_partition() -> None:
    report = evaluate_health(
        TH, lags={("outcomes", 0): 500, ("outcomes", 1): 12_000, ("exposures", 0): -3}
    )
    by_topic = {line.subject: line for line in report.lines}
    assert by_topic["outcomes"].level is Level.WARN
    assert by_topic["outcomes"].value == 12_000
    assert "partition 1" in by_topic["outcomes"].detail
    assert "total 12500 over 2 partitions" in by_topic["outcomes"].detail
    assert by_topic["exposures"].level is Level.OK and by_topic["exposures"].value == 0
    assert report.exit_code == 1
    crit = evaluate_health(TH, lags={("outcomes", 3): 100_000})
    assert crit.exit_code == 2


def test_freshness_lines() -> None:
    report = evaluate_health(
        TH,
        event_ages={"outcomes": 30.0, "exposures": math.inf},
        state_write_age=90.0,
        event_lag_p99={"outcomes": 45.0},
    )
    lines = {(line.subject, line.metric): line for line in report.lines}
    assert lines[("outcomes", "newest_event_age_s")].level is Level.OK
    never = lines[("exposures", "newest_event_age_s")]
    assert never.level is Level.CRIT and never.detail == "nothing seen yet"
    assert lines[("state", "state_write_age_s")].level is Level.WARN
    assert lines[("outcomes", "event_lag_p99_s")].level is Level.WARN
    assert ("server", "serving_state_age_s") not in lines  # not given → not checked
    assert report.exit_code == 2
    text = report.render()
    assert "never" in text and text.endswith("overall: CRIT")
    with pytest.raises(ValueError):
        evaluate_health(TH, state_write_age=-1.0)


def test_drift_and_alert_lines() -> None:
    drift = DriftReport(
        now=0.0,
        window_s=300.0,
        reference_s=3600.0,
        signals=(
            DriftSignal("items_js", "outcomes", 0.3, 0.1, Level.WARN, True, cause="JS 0.3"),
            DriftSignal(
                "event_mix_psi",
                "outcomes",
                math.nan,
                0.25,
                Level.OK,
                False,
                cause="insufficient data: 10 events",
            ),
        ),
    )
    manager = AlertManager(AlertPolicy(min_duration_s=0))
    manager.evaluate(
        1_700_000_000.0,
        [Observation(kind="drift_items", value=0.3, level=Level.WARN, warn=0.1, cause="JS 0.3")],
    )
    report = evaluate_health(TH, drift=drift, firing=manager.firing())
    lines = {(line.subject, line.metric): line for line in report.lines}
    assert lines[("drift/outcomes", "items_js")].level is Level.WARN
    skipped = lines[("drift/outcomes", "event_mix_psi")]
    assert skipped.value is None and skipped.level is Level.OK
    alert = lines[("drift_items", "alert")]
    assert alert.level is Level.WARN and "firing (threshold 0.1): JS 0.3" in alert.detail
    assert report.exit_code == 1
    assert "WARN  drift_items" in report.render()


def test_thresholds() -> None:
    from core.settings import load_settings

    assert HealthThresholds.from_settings(load_settings()) == HealthThresholds()
    with pytest.raises(ValueError, match="lag"):
        HealthThresholds(lag_warn=10, lag_crit=10)
    with pytest.raises(ValueError, match="freshness"):
        HealthThresholds(freshness_warn_s=600)
