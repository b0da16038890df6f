"""Monitor wiring without Kafka: batch feed, the independent monitor's core, status assembly,
and the worker monitor's periodic tick against fakeredis."""

from __future__ import annotations

import math
from typing import Any

import fakeredis
import orjson
import pytest

from core.settings import load_settings
from monitoring.alerting import AlertPolicy
from monitoring.health import HealthThresholds
from monitoring.lag_monitor import CtrCounters, LagMonitor, SilenceTracker
from monitoring.levels import Level
from monitoring.metrics import WorkerMetrics
from monitoring.monitor import Monitor, MonitorConfig
from monitoring.monitor_io import CONSUMED_TOPICS, FreshnessReading, MonitorStore, OffsetSample
from monitoring.status_report import StatusInputs, build_status, report_doc
from runtime.worker_monitor import WorkerMonitor, feed_batch
from schemas.events import Alert, DeadLetter, Exposure, Outcome
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.pipeline import BatchResult
from streams.processor import Record

T0 = 1_700_000_000.0
TH = HealthThresholds(lag_warn=100, lag_crit=1000, freshness_warn_s=60, freshness_crit_s=300)
CONFIG = MonitorConfig(health=TH, alerts=AlertPolicy(min_duration_s=5, stale_s=900))


def _outcome(user: str, item: str, ts: float, kind: str = "view") -> Outcome:
    raw = {"user_id": user, "item_id": item, "event_type": kind, "ts": ts}
    return Outcome.model_validate_json(orjson.dumps(raw))


def _exposure(user: str, ts: float, surface: str = "home", variant: str = "B") -> Exposure:
    raw = {
        "request_id": f"r-{user}-{ts}",
        "user_id": user,
        "ts": ts,
        "items": [{"item_id": "a", "rank": 1}, {"item_id": "b", "rank": 2}],
        "context": {"surface": surface},
        "variant": variant,
    }
    return Exposure.model_validate_json(orjson.dumps(raw))


def _dead(ts: float, reason: str = "not_json") -> DeadLetter:
    raw = {
        "source_topic": "p.outcomes",
        "partition": 0,
        "offset": 1,
        "raw_b64": "",
        "reason": reason,
        "error": "x",
        "ts": ts,
    }
    return DeadLetter.model_validate_json(orjson.dumps(raw))


def _sample(
    ends: dict[tuple[str, int], int], committed: dict[tuple[str, int], int], at: float = T0
) -> OffsetSample:
    return OffsetSample(at=at, ends=ends, committed=committed)


def test_consumed_topics_match_the_worker_app() -> None:
    from streams.app import CONSUMED

    assert CONSUMED_TOPICS == CONSUMED


def test_feed_batch_counts_outcomes_exposures_and_dead_letters() -> None:
    monitor = Monitor(MonitorConfig(), started_at=T0)
    result = BatchResult()
    result.records = [
        Record(Topic.OUTCOMES, 0, 1, _outcome("u1", "i1", T0 + 1)),
        Record(Topic.OUTCOMES, 0, 2, _outcome("u1", "i2", T0 + 2, "click")),
        Record(Topic.EXPOSURES, 0, 1, _exposure("u1", T0 + 1)),
    ]
    result.dead_letters = [_dead(T0 + 3), _dead(T0 + 3, "invalid")]
    feed_batch(monitor, result, T0 + 5)
    (bucket,) = monitor.windows.buckets.values()
    assert bucket.topics == {"outcomes": 2, "exposures": 1}
    assert bucket.types == {"view": 1, "click": 1}
    assert bucket.items == {"i1": 1, "i2": 1}
    assert bucket.new_users == 1 and bucket.new_items == 2
    # CTR is the monitor process's: the worker counts exposures for volume only
    assert bucket.impressions == {} and bucket.clicks == {}
    assert bucket.deadletters == {"not_json": 1, "invalid": 1}
    assert monitor.windows.newest_ts == {"outcomes": T0 + 2, "exposures": T0 + 1}


def test_ctr_counters_deltas_resets_and_other_fields() -> None:
    ctr = CtrCounters()
    first = ctr.update({"home|B|imp": 100, "home|B|clk": 5, "join|ok": 7, "join|attempt": 9})
    assert first.impressions == {} and first.clicks == {}  # baseline only
    delta = ctr.update({"home|B|imp": 150, "home|B|clk": 9, "pdp|A|imp": 10, "join|ok": 20})
    assert delta.impressions == {"home|B": 50, "pdp|A": 10}
    assert delta.clicks == {"home|B": 4}
    reset = ctr.update({"home|B|imp": 3})  # hash deleted and restarted
    assert reset.impressions == {"home|B": 3} and reset.clicks == {}
    again = CtrCounters.from_dict(orjson.loads(orjson.dumps(ctr.to_dict())))
    assert again.update({"home|B|imp": 4}).impressions == {"home|B": 1}


def test_silence_tracker() -> None:
    tracker = SilenceTracker(started_at=T0)
    assert tracker.update(T0 + 10, {"outcomes": 5}) == {"outcomes": 10.0}  # since start
    assert tracker.update(T0 + 20, {"outcomes": 7}) == {"outcomes": 0.0}
    assert tracker.update(T0 + 50, {"outcomes": 7}) == {"outcomes": 30.0}
    restored = SilenceTracker.from_dict(T0 + 60, tracker.to_dict())
    assert restored.update(T0 + 70, {"outcomes": 7}) == {"outcomes": 50.0}


def test_lag_monitor_fires_and_resolves_lag_once() -> None:
    mon = LagMonitor(CONFIG, started_at=T0)
    ends = {("outcomes", 0): 5000, ("outcomes", 1): 10}
    fresh = FreshnessReading({"outcomes": T0, "exposures": T0}, last_write=T0)
    kinds: list[tuple[str, str, str]] = []
    for step in range(0, 20):
        now = T0 + step
        behind = _sample(ends, {("outcomes", 0): 4500, ("outcomes", 1): 10})
        result = mon.evaluate(now, offsets=behind, freshness=fresh, ctr_counters=None)
        kinds += [(a.kind, a.state, a.severity.value) for a in result.alerts]
    assert kinds == [("consumer_lag", "firing", "warn")]
    line = next(x for x in result.health.lines if x.metric == "consumer_lag")
    assert line.level is Level.WARN and line.value == 500
    for step in range(20, 30):
        caught_up = _sample(ends, dict(ends))
        result = mon.evaluate(T0 + step, offsets=caught_up, freshness=fresh, ctr_counters=None)
        kinds += [(a.kind, a.state, a.severity.value) for a in result.alerts]
    assert kinds[-1] == ("consumer_lag", "resolved", "warn")
    assert mon.alerts.firing() == []


def test_lag_monitor_freshness_causes_and_silence() -> None:
    mon = LagMonitor(CONFIG, started_at=T0)
    never = FreshnessReading({}, last_write=None)
    ends = {("outcomes", 0): 10, ("exposures", 0): 0}
    alerts: list[Alert] = []
    result = None
    for step in range(0, 400, 10):
        result = mon.evaluate(
            T0 + step, offsets=_sample(ends, dict(ends)), freshness=never, ctr_counters=None
        )
        alerts += result.alerts
    assert result is not None
    by_id = {a.alert_id: a for a in alerts if a.severity.value == "crit"}
    assert by_id["freshness:topic=outcomes"].cause == "no outcomes event processed yet"
    assert "no worker has processed" in by_id["state_freshness"].cause
    assert "end offsets unchanged" in by_id["topic_silence:topic=outcomes"].cause
    assert result.event_ages["outcomes"] == math.inf
    levels = {(x.subject, x.metric): x.level for x in result.health.lines}
    assert levels[("outcomes", "newest_event_age_s")] is Level.CRIT
    assert levels[("outcomes", "silent_for_s")] is Level.CRIT

    # processed events are old while messages wait: the cause says the worker is behind
    stale = FreshnessReading({"outcomes": T0, "exposures": T0}, last_write=T0)
    behind = _sample({("outcomes", 0): 900}, {("outcomes", 0): 10})
    mon2 = LagMonitor(CONFIG, started_at=T0)
    causes = []
    for step in range(100, 200, 10):
        res = mon2.evaluate(T0 + step, offsets=behind, freshness=stale, ctr_counters=None)
        causes += [a.cause for a in res.alerts if a.alert_id == "freshness:topic=outcomes"]
    assert causes and "890 messages wait (worker stuck or behind)" in causes[0]


def test_lag_monitor_ctr_drop_alerts_and_state_round_trip() -> None:
    config = MonitorConfig(health=TH, alerts=AlertPolicy(min_duration_s=0))
    mon = LagMonitor(config, started_at=T0)
    imp = clk = 0
    alerts: list[Alert] = []
    now = T0
    for step in range(0, 3900, 10):  # 65 min: fills the 1 h reference, then CTR drops
        now = T0 + step
        imp += 200
        clk += 10 if step < 3600 else 3  # 5 % → 1.5 %
        result = mon.evaluate(
            now, offsets=None, freshness=None, ctr_counters={"home|B|imp": imp, "home|B|clk": clk}
        )
        alerts += result.alerts
    assert [a.alert_id for a in alerts] == ["drift_ctr:surface=home,variant=B"]
    assert alerts[0].state == "firing"
    signal = result.drift.get("ctr_rel_drop", "home|B")
    assert signal is not None and signal.value > 0.3
    assert {s.signal for s in result.drift.signals} == {"ctr_rel_drop", "ctr_drop"}
    state = orjson.loads(orjson.dumps(mon.state()))
    again = LagMonitor(config, started_at=now, state=state)
    assert [a.alert_id for a in again.alerts.firing()] == ["drift_ctr:surface=home,variant=B"]
    with pytest.raises(ValueError, match="version"):
        LagMonitor(config, started_at=now, state={**state, "version": 99})


def _doc(
    role: str, instance: str, lines: list[dict[str, Any]], alerts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "role": role,
        "instance": instance,
        "ts": T0 + 99,
        "host": "h",
        "pid": 1,
        "report": {"level": "OK", "lines": lines, "alerts": alerts},
    }


def test_build_status_levels_json_and_alerts() -> None:
    drift_line = {
        "level": "WARN",
        "subject": "drift/outcomes",
        "metric": "volume_ratio",
        "value": 2.5,
        "detail": "x2.5",
    }
    lag_copy = {
        "level": "CRIT",
        "subject": "outcomes",
        "metric": "consumer_lag",
        "value": 1e9,
        "detail": "stale copy",
    }
    alert = {
        "alert_id": "drift_volume:topic=outcomes",
        "kind": "drift_volume",
        "labels": {"topic": "outcomes"},
        "severity": "WARN",
        "value": 2.5,
        "threshold": 2.0,
        "cause": "volume x2.5",
        "first_seen": T0 + 40,
    }
    inputs = StatusInputs(
        now=T0 + 100,
        group="g",
        offsets=_sample(
            {("outcomes", 0): 300, ("outcomes", 1): 50, ("exposures", 0): 0},
            {("outcomes", 0): 100, ("outcomes", 1): 50, ("exposures", 0): 0},
        ),
        later_ends={("outcomes", 0): 320, ("outcomes", 1): 60, ("exposures", 0): 0},
        rate_window_s=2.0,
        freshness=FreshnessReading({"outcomes": T0 + 90}, last_write=T0 + 95),
        workers=[_doc("worker", "w1", [drift_line, lag_copy], [alert])],
        monitors=[],
        freshness_topics=("outcomes", "exposures"),
    )
    status = build_status(TH, inputs)
    doc = status.doc
    assert doc["topics"]["outcomes"] == {
        "lag": 200,
        "lag_max": 200,
        "partitions": {"0": 200, "1": 0},
        "events_per_s": 15.0,
        "newest_event_age_s": 10.0,
        "newest_event_at": "2023-11-14T22:14:50+00:00",
        "historical": False,
        "silent_for_s": None,
    }
    assert doc["topics"]["exposures"]["newest_event_age_s"] is None
    assert doc["state"] == {"write_age_s": 5.0}
    levels = {(x["subject"], x["metric"]): x["level"] for x in doc["lines"]}
    assert levels[("outcomes", "consumer_lag")] == "WARN"  # 200 ≥ 100, live, not the copy
    assert levels[("exposures", "newest_event_age_s")] == "CRIT"  # never processed
    assert levels[("monitor", "alive")] == "WARN"
    assert levels[("drift/outcomes", "volume_ratio")] == "WARN"
    assert levels[("drift_volume:topic=outcomes", "alert")] == "WARN"
    assert [a["source"] for a in doc["alerts"]] == ["worker:w1"]
    assert sum(1 for x in doc["lines"] if x["metric"] == "consumer_lag") == 2
    assert status.exit_code == 2 and doc["overall"] == "CRIT" and doc["exit_code"] == 2
    assert status.render().endswith("overall: CRIT")
    orjson.dumps(doc)  # JSON-able: no inf / nan


def test_build_status_several_workers_are_told_apart() -> None:
    line = {
        "level": "OK",
        "subject": "drift/all",
        "metric": "deadletter_rate",
        "value": None,
        "detail": "insufficient data",
    }
    alert = {
        "alert_id": "deadletter_rate",
        "kind": "deadletter_rate",
        "labels": {},
        "severity": "WARN",
        "value": 0.02,
        "threshold": 0.01,
        "cause": "2 %",
        "first_seen": T0,
    }
    crit = {**alert, "severity": "CRIT", "value": 0.09}
    inputs = StatusInputs(
        now=T0 + 100,
        group="g",
        offsets=_sample({}, {}),
        later_ends=None,
        rate_window_s=0,
        freshness=FreshnessReading({"outcomes": T0 + 99}, last_write=T0 + 99),
        workers=[_doc("worker", "a", [line], [alert]), _doc("worker", "b", [line], [crit])],
        monitors=[_doc("monitor", "m", [], [])],
        freshness_topics=("outcomes",),
    )
    doc = build_status(TH, inputs).doc
    subjects = [x["subject"] for x in doc["lines"] if x["metric"] == "deadletter_rate"]
    assert subjects == ["drift/all@a", "drift/all@b"]
    assert [(a["alert_id"], a["severity"]) for a in doc["alerts"]] == [("deadletter_rate", "CRIT")]
    assert doc["overall"] == "CRIT"


async def test_worker_monitor_tick_sends_alerts_writes_heartbeat_and_restores() -> None:
    settings = load_settings(
        kafka_bootstrap="127.0.0.1:1",
        network_timeout_s=0.5,
        key_prefix="wm",
        drift_bucket_s=1,
        drift_window_s=2,
        drift_reference_windows=2,
        drift_min_events=10,
        alert_min_duration_s=0,
        monitor_interval_s=1,
        monitor_instance="w1",
    )
    server = fakeredis.FakeServer()
    clock = [T0]
    sent: list[Alert] = []

    async def sink(alerts: Any) -> None:
        sent.extend(alerts)

    def build() -> WorkerMonitor:
        from prometheus_client import CollectorRegistry

        wm = WorkerMonitor(
            settings,
            WorkerMetrics(CollectorRegistry()),
            lambda: {"outcomes": clock[0]},
            clock=lambda: clock[0],
        )
        wm.send_alerts = sink
        return wm

    wm = build()
    client = fakeredis.FakeAsyncRedis(server=server)
    wm._store = MonitorStore(client, Keyspace("wm"), timeout_s=1)
    wm.instance = "w1"
    wm.monitor = Monitor(wm.config, started_at=T0)
    # 10 s at 20 valid + 5 dead letters per second: a 20 % dead-letter rate
    for step in range(10):
        clock[0] = T0 + step
        result = BatchResult()
        result.records = [
            Record(Topic.OUTCOMES, 0, i, _outcome(f"u{i}", f"i{i}", clock[0])) for i in range(20)
        ]
        result.dead_letters = [_dead(clock[0]) for _ in range(5)]
        wm.observe(result, 0.01)
        await wm.tick()
    assert [(a.alert_id, a.state, a.severity.value) for a in sent] == [
        ("deadletter_rate", "firing", "crit")
    ]
    raw = await client.get(Keyspace("wm").heartbeat("worker", "w1"))
    assert isinstance(raw, bytes)
    hb = orjson.loads(raw)
    assert hb["instance"] == "w1" and hb["report"]["alerts"][0]["alert_id"] == "deadletter_rate"
    newest = await client.zrange(Keyspace("wm").stats("newest"), 0, -1, withscores=True)
    assert newest == [(b"outcomes", T0 + 9)]
    # lag and freshness are not the worker's alerts
    assert not any(a.kind in {"consumer_lag", "freshness"} for a in sent)

    await wm.close()  # saves the state, removes the heartbeat
    assert await client.get(Keyspace("wm").heartbeat("worker", "w1")) is None
    again = build()
    again._store = MonitorStore(
        fakeredis.FakeAsyncRedis(server=server), Keyspace("wm"), timeout_s=1
    )
    state = await again._store.load_state("worker", "w1")
    assert state is not None
    restored = Monitor(again.config, started_at=clock[0], state=state)
    assert [a.alert_id for a in restored.alerts.firing()] == ["deadletter_rate"]
    await again._store.aclose()


def test_report_doc_drops_non_finite_values() -> None:
    mon = LagMonitor(CONFIG, started_at=T0)
    result = mon.evaluate(
        T0 + 1, offsets=None, freshness=FreshnessReading({}, None), ctr_counters=None
    )
    doc = report_doc(result.health, mon.alerts.firing())
    orjson.dumps(doc)
    ages = [x for x in doc["lines"] if x["metric"] == "newest_event_age_s"]
    assert ages and all(x["value"] is None and x["level"] == "CRIT" for x in ages)
