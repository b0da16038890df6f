"""Metric specs and the prometheus_client objects built from them."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitoring.coverage import CoverageMetrics
from monitoring.drift import DriftReport, DriftSignal
from monitoring.levels import Level
from monitoring.metrics import CtrCountersCollector, RetuneMetrics, WorkerMetrics
from schemas.metrics import ALL_METRICS, DRIFT_SIGNALS, METRICS_BY_NAME, metrics_for
from serving import metrics as server_metrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_specs_are_consistent() -> None:
    assert len(METRICS_BY_NAME) == len(ALL_METRICS)
    for spec in ALL_METRICS:
        assert spec.name.startswith("streamrec_") and spec.help and spec.processes
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert (spec.buckets is not None) == (spec.kind == "histogram"), spec.name
    assert {s.name for s in metrics_for("worker")} | {s.name for s in metrics_for("server")} == {
        s.name for s in ALL_METRICS
    }
    from monitoring.drift import SIGNAL_KINDS

    assert set(DRIFT_SIGNALS) == set(SIGNAL_KINDS)


def test_every_spec_is_registered_with_its_labels() -> None:
    worker_registry = CollectorRegistry()
    WorkerMetrics(worker_registry)
    RetuneMetrics(worker_registry)  # `streamrec monitor` adds these to the worker families
    CtrCountersCollector(("home",), worker_registry)  # and the CTR counters (no reading yet)
    CoverageMetrics(worker_registry)  # and the coverage / long-tail gauges (issue 20)
    registered = {}
    for registry in (worker_registry, server_metrics.REGISTRY):
        text = generate_latest(registry).decode()
        for family in text_string_to_metric_families(text):
            registered[family.name] = family.type
    for spec in ALL_METRICS:
        base = spec.name.removesuffix("_total")
        assert registered.get(base) == spec.kind, spec.name


def test_publish_helpers_remove_vanished_series() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.publish_lags({("outcomes", 0): 5, ("outcomes", 1): -2})
    metrics.publish_lags({("outcomes", 1): 7})  # partition 0 revoked
    got = samples(registry)
    lag = {k: v for k, v in got.items() if k[0] == "streamrec_consumer_lag"}
    assert lag == {("streamrec_consumer_lag", (("partition", "1"), ("topic", "outcomes"))): 7.0}

    def report(*signals: DriftSignal) -> DriftReport:
        return DriftReport(now=0.0, window_s=300.0, reference_s=3600.0, signals=signals)

    ctr = DriftSignal(
        "ctr_rel_drop",
        "home|B",
        0.5,
        0.3,
        Level.OK,
        True,
        significant=False,
        labels={"surface": "home", "variant": "B"},
    )
    items = DriftSignal("items_js", "outcomes", math.nan, 0.1, Level.OK, False)
    metrics.publish_drift(report(ctr, items))
    got = samples(registry)
    key = (("scope", "home|B"), ("signal", "ctr_rel_drop"))
    assert got[("streamrec_drift_value", key)] == 0.5
    assert got[("streamrec_drift_evaluable", key)] == 0.0  # not significant: guards failed
    assert got[("streamrec_drift_threshold", key)] == 0.3
    metrics.publish_drift(report(items))
    assert ("streamrec_drift_value", key) not in samples(registry)

    metrics.publish_alerts({("drift_items", "warn"): 1})
    metrics.publish_alerts({})
    got = samples(registry)
    assert got[("streamrec_alerts_firing", (("kind", "drift_items"), ("severity", "warn")))] == 0
    metrics.publish_ages({"outcomes": 12.0}, 3.0)
    got = samples(registry)
    assert got[("streamrec_newest_event_age_seconds", (("topic", "outcomes"),))] == 12.0
    assert got[("streamrec_state_write_age_seconds", ())] == 3.0
