"""The re-tune decision: one test per branch, the sustain rule, and its wiring in the monitor."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.alerting import AlertManager, AlertPolicy
from monitoring.drift import DriftSignal, DriftThresholds
from monitoring.lag_monitor import LagMonitor
from monitoring.levels import Level
from monitoring.metrics import RetuneMetrics
from monitoring.monitor import MonitorConfig
from monitoring.retune import (
    RETUNE_COMMAND,
    RETUNE_KIND,
    CtrSustain,
    RetuneConfig,
    SignalOut,
    SustainedDrop,
    Verdict,
    decide,
    signals_out_in_reports,
)
from monitoring.windows import WindowConfig
from schemas.events import Severity
from schemas.metrics import RETUNE_DECISIONS

T0 = 1_700_000_000.0
KL = SignalOut("items_kl", "outcomes", "top-50 item mix KL 0.140 nats", "worker-0")
VOLUME = SignalOut("volume_change", "outcomes", "outcomes volume +45% vs reference", "worker-0")
VOLUME_EXPOSURES = SignalOut("volume_change", "exposures", "exposures volume +41%", "worker-0")
DROP = SustainedDrop("home|B", 960.0, "CTR home/B 3.80% vs 5.00% (-24%, z=-4.1)")


# --- decide: one test per branch --------------------------------------------------------------
def test_sustained_ctr_drop_means_retune_now() -> None:
    decision = decide([KL], [DROP], sustain_s=900)
    assert decision.verdict is Verdict.RETUNE_NOW and decision.level is Level.CRIT
    assert decision.command == RETUNE_COMMAND
    assert "streamrec eval tune PATH --holdout-days D" in decision.command
    assert "home|B (16 min)" in decision.reason and "≥ 15 min" in decision.reason
    assert "-24%" in decision.reason
    assert decision.summary.startswith("re-tune now: CTR drop sustained")
    assert decision.summary.endswith(f"run: {RETUNE_COMMAND}")


def test_two_signals_out_mean_schedule() -> None:
    decision = decide([VOLUME, KL], [], sustain_s=900)
    assert decision.verdict is Verdict.SCHEDULE and decision.level is Level.WARN
    assert decision.signals_out == 2 and decision.command == RETUNE_COMMAND
    assert decision.reason.startswith("2 plan signals out: items_kl (outcomes)")
    assert "volume_change (outcomes): outcomes volume +45%" in decision.reason


def test_one_signal_out_is_within_bounds_even_on_several_scopes() -> None:
    # volume of two topics is one signal: not enough to schedule
    decision = decide([VOLUME, VOLUME_EXPOSURES], [], sustain_s=900)
    assert decision.verdict is Verdict.WITHIN_BOUNDS and decision.level is Level.OK
    assert decision.signals_out == 1 and decision.command == ""
    assert decision.reason.startswith("1 plan signal out (2 schedule a re-tune): volume_change")
    assert "(exposures, outcomes)" in decision.reason
    assert "run:" not in decision.summary


def test_nothing_out_is_within_bounds() -> None:
    decision = decide([], [], sustain_s=900)
    assert decision.verdict is Verdict.WITHIN_BOUNDS
    assert decision.summary == "within bounds: no plan signal out"


def test_decision_as_observation_line_and_document() -> None:
    for verdict_out, sustained, value in (
        ([], [], 0.0),
        ([KL, VOLUME], [], 1.0),
        ([], [DROP], 2.0),
    ):
        decision = decide(verdict_out, sustained, sustain_s=900)
        obs = decision.observation(300.0)
        assert (obs.kind, obs.value, obs.level, obs.warn, obs.crit) == (
            RETUNE_KIND,
            value,
            decision.level,
            1.0,
            2.0,
        )
        line = decision.status_line()
        assert (line.subject, line.metric, line.level) == ("retune", "decision", decision.level)
        doc = decision.to_doc()
        assert doc["decision"] == decision.verdict.value and doc["reason"] == decision.reason
    assert [v.label for v in Verdict] == ["within bounds", "schedule", "re-tune now"]
    assert tuple(v.value for v in Verdict) == RETUNE_DECISIONS


def test_the_retune_alert_fires_warn_on_schedule_and_escalates_on_retune_now() -> None:
    manager = AlertManager(AlertPolicy(min_duration_s=10, clear_ratio=0.8, stale_s=900))
    schedule = decide([KL, VOLUME], [], sustain_s=900)
    now_ = decide([], [DROP], sustain_s=900)
    within = decide([], [], sustain_s=900)
    events = []
    for t, decision in ((0, schedule), (10, schedule), (20, now_), (30, now_), (40, within)):
        events += manager.evaluate(T0 + t, [decision.observation(300.0)])
    events += manager.evaluate(T0 + 50, [within.observation(300.0)])
    assert [(e.state, e.severity) for e in events] == [
        ("firing", Severity.WARN),
        ("firing", Severity.CRIT),
        ("resolved", Severity.CRIT),
    ]
    assert events[0].alert_id == "retune" and "schedule: 2 plan signals out" in events[0].cause
    assert "re-tune now" in events[1].cause


# --- the sustain rule -------------------------------------------------------------------------
def _ctr(
    value: float, *, significant: bool = True, evaluable: bool = True, reference: float = 0.05
) -> DriftSignal:
    """A ``ctr_drop`` signal: CTR ``reference × (1 − value)`` against a rolling ``reference``."""
    level = Level.WARN if (value >= 0.15 and significant and evaluable) else Level.OK
    stats = {"ctr": reference * (1 - value), "reference_ctr": reference, "z": -3.0}
    return DriftSignal(
        "ctr_drop", "home|B", value, 0.15, level, evaluable, cause=f"drop {value:.0%}",
        significant=significant, stats={} if math.isnan(value) else stats,
    )  # fmt: skip


def test_a_drop_is_sustained_only_when_out_at_every_evaluation() -> None:
    sustain = CtrSustain(RetuneConfig(sustain_s=60, max_gap_s=30))
    assert sustain.update(T0, [_ctr(0.2)]) == []
    assert sustain.update(T0 + 30, [_ctr(0.2)]) == []
    (drop,) = sustain.update(T0 + 60, [_ctr(0.25)])
    assert (drop.scope, drop.seconds) == ("home|B", 60.0)
    assert drop.cause == "CTR home|B 3.75% vs 5.00% before the drop (-25%)"
    assert sustain.durations(T0 + 60) == {"home|B": 60.0}
    # one evaluation back within bounds starts the count again
    assert sustain.update(T0 + 70, [_ctr(0.1)]) == []
    assert sustain.durations(T0 + 70) == {}
    for t in (80, 100, 120):
        assert sustain.update(T0 + t, [_ctr(0.3)]) == []
    assert [d.seconds for d in sustain.update(T0 + 140, [_ctr(0.3)])] == [60.0]


@pytest.mark.parametrize(
    "breaker",
    [
        _ctr(0.1),  # back within 15 % of the baseline
        _ctr(math.nan, evaluable=False),  # too few impressions
        None,  # the pair was not reported at all
    ],
)
def test_a_drop_that_is_not_out_breaks_the_run(breaker: DriftSignal | None) -> None:
    sustain = CtrSustain(RetuneConfig(sustain_s=20, max_gap_s=30))
    sustain.update(T0, [_ctr(0.3)])
    sustain.update(T0 + 10, [] if breaker is None else [breaker])
    assert sustain.update(T0 + 20, [_ctr(0.3)]) == []
    assert sustain.update(T0 + 40, [_ctr(0.3)]) != []


def test_the_drop_is_judged_against_the_ctr_before_it_not_the_rolling_reference() -> None:
    sustain = CtrSustain(RetuneConfig(sustain_s=60, max_gap_s=30))
    # 5 % → 3.5 %: out against the rolling reference, baseline 5 % kept
    assert sustain.update(T0, [_ctr(0.3)]) == []
    # the rolling reference absorbs the drop (3.9 % now): only 10 % below it, not out any
    # more, and not significant; but 3.5 % is still 30 % below the 5 % before the drop
    absorbed = _ctr(0.1, significant=False, reference=0.035 / 0.9)
    assert not absorbed.out
    assert sustain.update(T0 + 30, [absorbed]) == []
    (drop,) = sustain.update(T0 + 60, [absorbed])
    assert drop.seconds == 60 and drop.cause == "CTR home|B 3.50% vs 5.00% before the drop (-30%)"
    # the reference has too few clicks left to compare, the current CTR still counts
    too_few_reference_clicks = DriftSignal(
        "ctr_drop", "home|B", math.nan, 0.15, Level.OK, False, stats={"ctr": 0.035}
    )
    assert [d.seconds for d in sustain.update(T0 + 65, [too_few_reference_clicks])] == [65.0]
    # a recovery to within 15 % of the 5 % baseline ends it, however the reference moved
    recovered = _ctr(0.0, reference=0.0430)
    assert sustain.update(T0 + 70, [recovered]) == [] and sustain.durations(T0 + 70) == {}
    # a signal without the CTR inputs (not evaluable) never starts a run
    assert sustain.update(T0 + 80, [_ctr(math.nan, evaluable=False)]) == []
    assert sustain.runs == {}


def test_a_gap_longer_than_a_window_restarts_the_count_and_state_round_trips() -> None:
    config = RetuneConfig(sustain_s=60, max_gap_s=30)
    sustain = CtrSustain(config)
    sustain.update(T0, [_ctr(0.3)])
    sustain.update(T0 + 30, [_ctr(0.3)])
    restored = CtrSustain.from_dict(config, sustain.to_dict())
    assert restored.durations(T0 + 30) == {"home|B": 30.0}
    assert restored.update(T0 + 60, [_ctr(0.3)]) != []  # 30-s steps: no gap
    again = CtrSustain.from_dict(config, sustain.to_dict())
    assert again.update(T0 + 61, [_ctr(0.3)]) == []  # 31 s since the last evaluation
    assert again.durations(T0 + 61) == {"home|B": 0.0}
    with pytest.raises(ValueError):
        CtrSustain.from_dict(config, {"version": 99, "runs": {}})
    with pytest.raises(ValueError):
        CtrSustain.from_dict(config, {"version": 1, "runs": {"x": [1.0, 2.0, 0.05]}})


def test_retune_config_from_settings() -> None:
    from core.settings import load_settings

    config = RetuneConfig.from_settings(load_settings(drift_plan_ctr_sustain_s=300))
    assert (config.sustain_s, config.max_gap_s) == (300, 300)
    assert RetuneConfig() == RetuneConfig(sustain_s=900, max_gap_s=300)


# --- the workers' reports ---------------------------------------------------------------------
def test_signals_out_are_read_from_the_workers_heartbeat_reports() -> None:
    def line(subject: str, metric: str, level: str, detail: str = "d") -> dict[str, object]:
        return {
            "subject": subject,
            "metric": metric,
            "level": level,
            "value": 1.0,
            "detail": detail,
        }

    docs: list[dict[str, Any]] = [
        {
            "instance": "w1",
            "report": {
                "lines": [
                    line("drift/outcomes", "items_kl", "WARN", "items moved"),
                    line("drift/outcomes", "items_js", "WARN"),  # not a plan signal
                    line("drift/users", "coldstart_change", "OK"),  # within bounds
                    line("outcomes", "volume_change", "WARN"),  # not a drift line
                ]
            },
        },
        {"instance": "w2", "report": {"lines": [line("drift/items", "coldstart_change", "WARN")]}},
        {"instance": "w3"},  # no report yet
    ]
    assert signals_out_in_reports(docs) == [
        SignalOut("items_kl", "outcomes", "items moved", "w1"),
        SignalOut("coldstart_change", "items", "d", "w2"),
    ]


# --- wired into `streamrec monitor`'s pure monitor ----------------------------------------------
CONFIG = MonitorConfig(
    window=WindowConfig(bucket_s=1, window_s=10, reference_windows=12, seen_capacity=1000),
    drift=DriftThresholds(ctr_min_impressions=100, min_events=20),
    alerts=AlertPolicy(min_duration_s=0, clear_ratio=0.8, stale_s=900),
    retune=RetuneConfig(sustain_s=30, max_gap_s=10),
)


def test_lag_monitor_turns_a_sustained_ctr_drop_into_retune_now() -> None:
    mon = LagMonitor(CONFIG, started_at=T0)
    imp = clk = 0
    verdicts: dict[int, Verdict] = {}
    out_steps: list[int] = []  # evaluations where the plans' CTR drop was out
    alerts = []
    result = None
    for step in range(0, 200):
        imp += 200
        clk += 10 if step < 150 else 6  # 5 % → 3 % (−40 %) once the 120-s reference is full
        result = mon.evaluate(
            T0 + step,
            offsets=None,
            freshness=None,
            ctr_counters={"home|B|imp": imp, "home|B|clk": clk},
        )
        assert result.retune is not None
        verdicts[step] = result.retune.verdict
        if "home|B" in result.ctr_drop_s:
            out_steps.append(step)
        alerts += [a for a in result.alerts if a.kind == RETUNE_KIND]
    assert result is not None and result.retune is not None
    assert {verdicts[s] for s in range(150)} == {Verdict.WITHIN_BOUNDS}
    first_now = min(s for s, v in verdicts.items() if v is Verdict.RETUNE_NOW)
    first_out = out_steps[0]
    assert out_steps == list(range(first_out, 200))  # out at every evaluation from then on
    # the drop shows within a window and is sustained 30 s after it first showed
    assert 150 < first_out <= 160 and first_now - first_out == 30
    assert all(verdicts[s] is Verdict.RETUNE_NOW for s in range(first_now, 200))
    assert result.retune.sustained[0].scope == "home|B"
    assert result.ctr_drop_s["home|B"] >= 30
    line = [x for x in result.health.lines if x.metric == "decision"]
    assert len(line) == 1 and line[0].level is Level.CRIT
    assert line[0].detail.startswith("re-tune now: CTR drop sustained")
    assert [(a.state, a.severity) for a in alerts] == [("firing", Severity.CRIT)]
    # the state keeps the run: a restarted monitor stays at re-tune now
    again = LagMonitor(CONFIG, started_at=T0 + 200, state=mon.state())
    imp += 200
    clk += 6
    after = again.evaluate(
        T0 + 200, offsets=None, freshness=None, ctr_counters={"home|B|imp": imp, "home|B|clk": clk}
    )
    assert after.retune is not None and after.retune.verdict is Verdict.RETUNE_NOW
    old = {k: v for k, v in mon.state().items() if k != "retune"}  # a state from before
    assert LagMonitor(CONFIG, started_at=T0, state=old).retune.runs == {}


def test_lag_monitor_schedules_on_worker_signals_and_skips_without_counters() -> None:
    mon = LagMonitor(CONFIG, started_at=T0)
    result = mon.evaluate(
        T0, offsets=None, freshness=None, ctr_counters={}, worker_signals=[KL, VOLUME]
    )
    assert result.retune is not None and result.retune.verdict is Verdict.SCHEDULE
    assert [a.kind for a in result.alerts] == [RETUNE_KIND]
    blind = mon.evaluate(T0 + 1, offsets=None, freshness=None, ctr_counters=None)
    assert blind.retune is None
    assert not [x for x in blind.health.lines if x.metric == "decision"]


def test_retune_metrics_are_one_hot() -> None:
    registry = CollectorRegistry()
    metrics = RetuneMetrics(registry)
    metrics.publish(decide([KL, VOLUME], [], sustain_s=900), {"home|B": 42.0})
    metrics.publish(decide([], [DROP], sustain_s=900), {"home|A": 5.0})
    text = generate_latest(registry).decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert got[("streamrec_retune_decision", (("decision", "retune_now"),))] == 1.0
    assert got[("streamrec_retune_decision", (("decision", "schedule"),))] == 0.0
    assert got[("streamrec_retune_decision", (("decision", "within_bounds"),))] == 0.0
    assert got[("streamrec_retune_signals_out", ())] == 0.0
    assert got[("streamrec_retune_ctr_drop_seconds", (("scope", "home|A"),))] == 5.0
    assert ("streamrec_retune_ctr_drop_seconds", (("scope", "home|B"),)) not in got


def test_status_shows_the_monitors_decision_line_and_json() -> None:
    from monitoring.health import HealthReport, HealthThresholds
    from monitoring.monitor_io import FreshnessReading, OffsetSample
    from monitoring.status_report import StatusInputs, build_status, report_doc

    decision = decide([], [DROP], sustain_s=900)
    monitor_doc = {
        "role": "monitor",
        "instance": "m0",
        "ts": T0,
        "report": report_doc(HealthReport((decision.status_line(),)), []),
        "retune": decision.to_doc(),
    }

    def status(monitors: list[dict[str, object]]) -> tuple[str, dict[str, object]]:
        built = build_status(
            HealthThresholds(),
            StatusInputs(
                now=T0,
                group="g",
                offsets=OffsetSample(at=T0, ends={}, committed={}),
                later_ends=None,
                rate_window_s=0.0,
                freshness=FreshnessReading({}, last_write=T0),
                workers=[],
                monitors=monitors,
                freshness_topics=(),
            ),
        )
        return built.render(), built.doc

    text, doc = status([monitor_doc])
    (line,) = [x for x in text.splitlines() if x.split()[1:3] == ["retune", "decision"]]
    assert line.startswith("CRIT") and "re-tune now: CTR drop sustained" in line
    assert "streamrec eval tune PATH --holdout-days D" in line
    retune = doc["retune"]
    assert isinstance(retune, dict)
    assert (retune["decision"], retune["label"]) == ("retune_now", "re-tune now")
    assert retune["command"] == RETUNE_COMMAND and retune["sustained"][0]["scope"] == "home|B"
    _, without = status([])
    assert without["retune"] is None
