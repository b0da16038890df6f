"""``prometheus_client`` objects of the worker and the lag monitor, built from the metric specs.

Specs (names, labels, help, buckets) live in :mod:`schemas.metrics`; the server's metrics are
:mod:`serving.metrics`. Create one :class:`WorkerMetrics` per registry; pass a fresh
``CollectorRegistry`` in tests. The ``publish_*`` helpers turn monitor results into gauge values
and remove label sets that disappeared (a CTR pair that is no longer served, a partition
revoked in a rebalance), so dashboards show no stale series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from monitoring.drift import DriftReport
from monitoring.retune import RetuneDecision
from monitoring.windows import PAIR_SEP
from schemas import metrics as names
from schemas.metrics import build_metric as _build
from schemas.rules import MAX_VARIANTS


class _Tracked:
    """Remembers which label sets a labelled gauge has, to remove the ones that vanish."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._known: set[tuple[str, ...]] = set()

    def replace(self, values: Mapping[tuple[str, ...], float], *, keep_zero: bool = False) -> None:
        for labels, value in values.items():
            self.gauge.labels(*labels).set(value)
        for labels in self._known - set(values):
            if keep_zero:
                self.gauge.labels(*labels).set(0)
            else:
                self.gauge.remove(*labels)
        self._known = set(values) | (self._known if keep_zero else set())


class WorkerMetrics:
    """Metrics exported by the faust worker (ingestion, freshness, lag, drift, alerts)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.events_processed = _build(names.EVENTS_PROCESSED, registry, Counter)
        self.deadletter = _build(names.DEADLETTER, registry, Counter)
        self.batch_seconds = _build(names.BATCH_SECONDS, registry, Histogram)
        self.redis_roundtrips = _build(names.REDIS_ROUNDTRIPS, registry, Counter)
        self.join_rate = _build(names.JOIN_RATE, registry, Gauge)
        self.event_lag = _build(names.EVENT_LAG, registry, Histogram)
        self.newest_event_age = _build(names.NEWEST_EVENT_AGE, registry, Gauge)
        self.state_write_age = _build(names.STATE_WRITE_AGE, registry, Gauge)
        self.consumer_lag = _build(names.CONSUMER_LAG, registry, Gauge)
        self.drift_value = _build(names.DRIFT_VALUE, registry, Gauge)
        self.drift_evaluable = _build(names.DRIFT_EVALUABLE, registry, Gauge)
        self.drift_threshold = _build(names.DRIFT_THRESHOLD, registry, Gauge)
        self.alerts_firing = _build(names.ALERTS_FIRING, registry, Gauge)
        self._lag = _Tracked(self.consumer_lag)
        self._drift = (
            _Tracked(self.drift_value),
            _Tracked(self.drift_evaluable),
            _Tracked(self.drift_threshold),
        )
        self._alerts = _Tracked(self.alerts_firing)

    def publish_lags(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set ``streamrec_consumer_lag`` for the partitions measured now (logical topics)."""
        self._lag.replace({(t, str(p)): max(0, lag) for (t, p), lag in lags.items()})

    def publish_ages(self, event_ages: Mapping[str, float], state_write_age: float) -> None:
        for topic, age in event_ages.items():
            self.newest_event_age.labels(topic).set(age)
        self.state_write_age.set(state_write_age)

    def publish_drift(self, report: DriftReport) -> None:
        """Set the drift gauges; value is NaN when not evaluable, evaluable=0/1 (guards)."""
        value, evaluable, threshold = self._drift
        value.replace({(s.signal, s.scope): s.value for s in report.signals})
        evaluable.replace(
            {(s.signal, s.scope): 1.0 if s.guards_passed else 0.0 for s in report.signals}
        )
        threshold.replace({(s.signal, s.scope): s.threshold for s in report.signals})

    def publish_alerts(self, firing_counts: Mapping[tuple[str, str], int]) -> None:
        """Set ``streamrec_alerts_firing``; kinds that stopped firing go to 0 (not removed)."""
        self._alerts.replace({key: float(n) for key, n in firing_counts.items()}, keep_zero=True)


class RetuneMetrics:
    """The re-tune decision's gauges, exported by ``streamrec monitor`` only."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.decision = _build(names.RETUNE_DECISION, registry, Gauge)
        self.signals_out = _build(names.RETUNE_SIGNALS_OUT, registry, Gauge)
        self.ctr_drop_seconds = _build(names.RETUNE_CTR_DROP_SECONDS, registry, Gauge)
        self._ctr = _Tracked(self.ctr_drop_seconds)

    def publish(self, decision: RetuneDecision, ctr_drop_s: Mapping[str, float]) -> None:
        """One-hot ``decision`` gauge, the signals-out count and each CTR drop's duration."""
        for name in names.RETUNE_DECISIONS:
            self.decision.labels(name).set(1.0 if name == decision.verdict.value else 0.0)
        self.signals_out.set(decision.signals_out)
        self._ctr.replace({(scope,): seconds for scope, seconds in ctr_drop_s.items()})


class CtrCountersCollector(Collector):
    """``streamrec_ctr_impressions_total`` / ``streamrec_ctr_clicks_total`` from the join counters.

    The exposure join counts items shown (``surface|variant|imp``) and clicks joined to their
    exposure (``surface|variant|clk``) in one Redis hash, cluster-wide; ``streamrec monitor``
    reads it every interval and hands it to :meth:`publish`. The values are exported as they
    are (monotonic; a Redis flush reads as a counter reset). Labels stay bounded: a surface
    outside ``surfaces`` is ``other`` (as on the server's answer metrics), and only the first
    ``max_variants`` variants seen get their own label, later ones are ``other`` (admission is
    sticky, so each labelled sum only grows; a restart may admit a different set when more
    variants than the cap exist).
    """

    def __init__(
        self,
        surfaces: tuple[str, ...],
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_variants: int = MAX_VARIANTS,
    ) -> None:
        self.surfaces = frozenset(surfaces)
        self.max_variants = max_variants
        self._variants: set[str] = set()
        self._values: dict[str, dict[tuple[str, str], int]] = {"imp": {}, "clk": {}}
        if registry is not None:
            registry.register(self)

    def _labels(self, surface: str, variant: str) -> tuple[str, str]:
        if variant not in self._variants and len(self._variants) < self.max_variants:
            self._variants.add(variant)
        return (
            surface if surface in self.surfaces else names.SURFACE_OTHER,
            variant if variant in self._variants else names.VARIANT_OTHER,
        )

    def publish(self, counters: Mapping[str, int]) -> None:
        """Take a reading of the join hash (``surface|variant|imp`` → count, …)."""
        shown: dict[tuple[str, str], int] = {}
        parsed: list[tuple[str, str, str, int]] = []
        for name, value in counters.items():
            pair, sep, what = name.rpartition(PAIR_SEP)
            surface, sep2, variant = pair.partition(PAIR_SEP)
            if sep and sep2 and what in self._values:
                parsed.append((what, surface, variant, int(value)))
                if what == "imp":
                    shown[(surface, variant)] = int(value)
        # variants met for the first time are admitted busiest first (stable across readings)
        parsed.sort(key=lambda r: (-shown.get((r[1], r[2]), 0), r[2], r[1], r[0]))
        values: dict[str, dict[tuple[str, str], int]] = {"imp": {}, "clk": {}}
        for what, surface, variant, value in parsed:
            key = self._labels(surface, variant)
            values[what][key] = values[what].get(key, 0) + value
        self._values = values

    def collect(self) -> Iterator[CounterMetricFamily]:
        for spec, what in ((names.CTR_IMPRESSIONS, "imp"), (names.CTR_CLICKS, "clk")):
            family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in sorted(self._values[what].items()):
                family.add_metric(labels, float(value))
            yield family
