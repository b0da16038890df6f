"""Every Prometheus metric streamrec exports: name, type, labels, help — in one place.

Worker, server, alert rules (``deploy/prometheus/alerts.yml``) and the Grafana dashboard
(``deploy/grafana/streamrec.json``) use these names; tests check that the rules and the
dashboard mention only metrics listed here. :mod:`monitoring.metrics` builds the
``prometheus_client`` objects from these specs.

Label conventions:

* ``topic`` is the *logical* topic name (``outcomes``, ``exposures``, ``items``,
  ``deadletter``), not the prefixed physical name, so rules and dashboards work for any
  ``STREAMREC_TOPIC_PREFIX``.
* ``partition`` is the partition number as a decimal string.
* ``signal`` / ``scope`` on the drift metrics are :data:`DRIFT_SIGNALS` and the signal's scope
  (``outcomes``, ``users``, ``home|control``, ``all`` …).
* ``stage`` on serving answers is the stage that supplied the answer's items
  (:data:`SERVING_STAGES`); everything but ``primary`` is a fallback.
* ``surface`` on the server's answer metrics is one of ``slo_surfaces`` or ``other``
  (:data:`SURFACE_OTHER`), so a client cannot grow the label set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MetricKind = Literal["counter", "gauge", "histogram"]
Process = Literal["worker", "server"]

#: Event-time lag buckets (seconds): sub-second up to an hour.
EVENT_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Worker batch duration buckets (seconds).
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
#: Serving latency buckets (seconds): fine-grained around the 50 ms p99 target.
SERVING_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)

#: ``signal`` label values of the drift metrics (see :mod:`monitoring.drift`).
DRIFT_SIGNALS = (
    "volume_ratio",
    "event_mix_psi",
    "items_js",
    "coldstart_delta",
    "ctr_rel_drop",
    "deadletter_rate",
)
#: ``stage`` label values of ``streamrec_serving_answers_total``.
SERVING_STAGES = (
    "primary",
    "segment_popularity",
    "global_popularity",
    "last_known",
    "kill_switch",  # a kill switch covered the request: the safe baseline answered (issue 19)
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric. ``name`` is the exposed family name (counters end in ``_total``)."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    help: str
    processes: tuple[Process, ...]
    buckets: tuple[float, ...] | None = None

    @property
    def series_names(self) -> tuple[str, ...]:
        """Names that appear in PromQL for this metric (histograms expose three series)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


_M = TypeVar("_M", Counter, Gauge, Histogram)


def build_metric(spec: MetricSpec, registry: CollectorRegistry, cls: type[_M]) -> _M:
    """The ``prometheus_client`` object of ``spec`` in ``registry`` (its kind must match)."""
    expected = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}[cls]
    if spec.kind != expected:
        raise TypeError(f"{spec.name} is a {spec.kind}, not a {expected}")
    if cls is Histogram:
        assert spec.buckets is not None, spec.name
        return cls(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    return cls(spec.name, spec.help, spec.labels, registry=registry)


_W: tuple[Process, ...] = ("worker",)
_S: tuple[Process, ...] = ("server",)

# --- worker: ingestion --------------------------------------------------------------------
EVENTS_PROCESSED = MetricSpec(
    "streamrec_events_processed_total",
    "counter",
    ("topic",),
    "Valid events applied to the state, by logical topic.",
    _W,
)
DEADLETTER = MetricSpec(
    "streamrec_deadletter_total",
    "counter",
    ("topic", "reason"),
    "Messages sent to the dead-letter topic, by source topic and reason.",
    _W,
)
BATCH_SECONDS = MetricSpec(
    "streamrec_batch_seconds",
    "histogram",
    (),
    "Wall time to plan and apply one batch (one atomic Redis write).",
    _W,
    BATCH_BUCKETS,
)
REDIS_ROUNDTRIPS = MetricSpec(
    "streamrec_redis_roundtrips_total",
    "counter",
    ("role",),
    "Redis round trips, by role (worker, serving, monitor).",
    ("worker", "server"),
)
JOIN_RATE = MetricSpec(
    "streamrec_join_rate",
    "gauge",
    (),
    "Share of attributed outcomes (with request_id) that joined their exposure, last window.",
    _W,
)

# --- worker: freshness and lag ----------------------------------------------------------
EVENT_LAG = MetricSpec(
    "streamrec_event_lag_seconds",
    "histogram",
    ("topic",),
    "Processing time minus event time of each applied event.",
    _W,
    EVENT_LAG_BUCKETS,
)
NEWEST_EVENT_AGE = MetricSpec(
    "streamrec_newest_event_age_seconds",
    "gauge",
    ("topic",),
    "Now minus the event time of the newest processed event, by topic (updated by a timer).",
    _W,
)
STATE_WRITE_AGE = MetricSpec(
    "streamrec_state_write_age_seconds",
    "gauge",
    (),
    "Now minus the time of the newest state write to Redis (updated by a timer).",
    _W,
)
CONSUMER_LAG = MetricSpec(
    "streamrec_consumer_lag",
    "gauge",
    ("topic", "partition"),
    "End offset minus committed offset of the worker group, per topic-partition.",
    _W,
)

# --- worker: drift and alerts -----------------------------------------------------------
DRIFT_VALUE = MetricSpec(
    "streamrec_drift_value",
    "gauge",
    ("signal", "scope"),
    "Drift statistic, current window vs reference window (see monitoring.drift).",
    _W,
)
DRIFT_EVALUABLE = MetricSpec(
    "streamrec_drift_evaluable",
    "gauge",
    ("signal", "scope"),
    "1 when the drift statistic passed its sample-size and significance guards, else 0.",
    _W,
)
DRIFT_THRESHOLD = MetricSpec(
    "streamrec_drift_threshold",
    "gauge",
    ("signal", "scope"),
    "Warn threshold configured for the drift statistic (for dashboard threshold lines).",
    _W,
)
ALERTS_FIRING = MetricSpec(
    "streamrec_alerts_firing",
    "gauge",
    ("kind", "severity"),
    "Alerts currently firing in the built-in alert manager, by kind and severity.",
    _W,
)

# --- monitor: CTR per surface and variant (dashboard intervals, issue 21) -----------------
#: ``variant`` label of a variant past the first ``MAX_VARIANTS`` the monitor saw (bounded).
VARIANT_OTHER = "other"
CTR_IMPRESSIONS = MetricSpec(
    "streamrec_ctr_impressions_total",
    "counter",
    ("surface", "variant"),
    "Items shown in exposures, by surface (one of slo_surfaces or 'other') and variant "
    "(bounded, 'other' past the cap): the cluster-wide exposure-join counters in Redis, "
    "exported by streamrec monitor.",
    _W,  # exported by `streamrec monitor`, which exports the worker's metric families
)
CTR_CLICKS = MetricSpec(
    "streamrec_ctr_clicks_total",
    "counter",
    ("surface", "variant"),
    "Clicks joined to the exposure that showed the item, by surface and variant (labels as "
    "streamrec_ctr_impressions_total; clicks / impressions is the item CTR).",
    _W,
)

# --- monitor: the re-tune decision (monitoring.retune, issue 21) --------------------------
#: ``decision`` label values of ``streamrec_retune_decision``.
RETUNE_DECISIONS = ("within_bounds", "schedule", "retune_now")
RETUNE_DECISION = MetricSpec(
    "streamrec_retune_decision",
    "gauge",
    ("decision",),
    "Re-tune decision of streamrec monitor: 1 for the current one (retune_now, schedule, "
    "within_bounds), 0 for the others.",
    _W,  # exported by `streamrec monitor`, which exports the worker's metric families
)
RETUNE_SIGNALS_OUT = MetricSpec(
    "streamrec_retune_signals_out",
    "gauge",
    (),
    "Plan drift signals out of bounds now (distinct signals; 2 or more schedule a re-tune).",
    _W,
)
RETUNE_CTR_DROP_SECONDS = MetricSpec(
    "streamrec_retune_ctr_drop_seconds",
    "gauge",
    ("scope",),
    "Seconds the plans' CTR drop of a surface|variant has been out at every evaluation "
    "(sustained, i.e. re-tune now, at drift_plan_ctr_sustain_s).",
    _W,
)

# --- monitor: live catalog coverage and long tail (monitoring.coverage, issue 20) ---------
CATALOG_COVERAGE = MetricSpec(
    "streamrec_catalog_coverage_ratio",
    "gauge",
    (),
    "Share of the available catalog shown in exposures over the last coverage_window_s "
    "(cluster-wide, from the worker's time-bucketed counts in Redis), exported by streamrec "
    "monitor; NaN while the catalog describes no available item.",
    _W,
)
LONG_TAIL_SHARE = MetricSpec(
    "streamrec_long_tail_impression_share",
    "gauge",
    (),
    "Share of the impressions of the last coverage_window_s going to items outside the "
    "most popular coverage_head_share of the available catalog, exported by streamrec "
    "monitor; NaN with no available catalog item or no impressions.",
    _W,
)

# --- server -------------------------------------------------------------------------------
SERVING_LATENCY = MetricSpec(
    "streamrec_serving_latency_seconds",
    "histogram",
    ("method",),
    "Server-side latency of each gRPC call, by method.",
    _S,
    SERVING_BUCKETS,
)
SERVING_ANSWERS = MetricSpec(
    "streamrec_serving_answers_total",
    "counter",
    ("method", "stage"),
    "Answers served, by method and the stage that supplied them (primary or a fallback).",
    _S,
)
SERVING_EMPTY = MetricSpec(
    "streamrec_serving_empty_answers_total",
    "counter",
    ("method", "surface"),
    "Answers with no items, by method and surface (bounded: see GRPC_ANSWERS); the server "
    "never answers empty unless it has no item at all (UNAVAILABLE).",
    _S,
)
SERVING_REDIS_ERRORS = MetricSpec(
    "streamrec_serving_redis_errors_total",
    "counter",
    (),
    "Redis calls from the server that failed or timed out.",
    _S,
)
EXPOSURE_BUFFER_DEPTH = MetricSpec(
    "streamrec_exposure_buffer_depth",
    "gauge",
    (),
    "Exposure events waiting in the bounded buffer for Kafka.",
    _S,
)
EXPOSURE_DROPPED = MetricSpec(
    "streamrec_exposure_dropped_total",
    "counter",
    (),
    "Exposure events dropped because the bounded buffer was full.",
    _S,
)
SERVING_ROW_CACHE = MetricSpec(
    "streamrec_serving_row_cache_total",
    "counter",
    ("result",),
    "Co-visitation row lookups of the server's in-process cache by result (hit, miss), and "
    "rows dropped by Redis invalidations (invalidated).",
    _S,
)
SERVING_USER_CACHE = MetricSpec(
    "streamrec_serving_user_cache_total",
    "counter",
    ("result",),
    "Lookups of users' recent and seen items in the server's in-process cache by result (hit, "
    "miss), and entries dropped by Redis invalidations (invalidated).",
    _S,
)
SERVING_STATE_AGE = MetricSpec(
    "streamrec_serving_state_age_seconds",
    "gauge",
    (),
    "Age of the state the server answers from (now minus the newest state write it read).",
    _S,
)
# --- server: operational controls (issue 19) ---------------------------------------------
SERVING_KILL_SWITCHES = MetricSpec(
    "streamrec_serving_kill_switches",
    "gauge",
    (),
    "Kill switches that are on, as this server last read them (0 = none; every answer in "
    "an active switch's scope comes from the safe baseline).",
    _S,
)
SERVING_TRACES_DROPPED = MetricSpec(
    "streamrec_serving_traces_dropped_total",
    "counter",
    (),
    "Decision traces not stored: buffer overflow or Redis unavailable for the write.",
    _S,
)

# --- server: answers by gRPC status code and the SLOs (issue 21) -------------------------
GRPC_ANSWERS = MetricSpec(
    "streamrec_grpc_answers_total",
    "counter",
    ("service", "method", "code", "surface"),
    "Unary gRPC answers of the server by service, method and status code (OK, "
    "INVALID_ARGUMENT, UNAVAILABLE …), errors of the handlers and of the request guards "
    "included; `surface` is the request's surface for Recommender calls (a surface outside "
    "slo_surfaces is 'other'), empty for the other services.",
    _S,
)
#: ``service`` label of the Recommender calls (the read path the SLOs are about).
RECOMMENDER_SERVICE = "streamrec.v1.Recommender"
#: ``surface`` label of a surface outside ``slo_surfaces`` (and of an undecodable request).
SURFACE_OTHER = "other"
#: Status codes that are the server's fault: they count against the availability SLO.
#: Client errors (INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND …), CANCELLED and throttling
#: (RESOURCE_EXHAUSTED: a caller over its rate limit, or the in-flight cap) do not.
SERVER_ERROR_CODES = (
    "UNKNOWN",
    "INTERNAL",
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "DATA_LOSS",
    "UNIMPLEMENTED",
)
#: ``slo`` label values of the SLO recording rules (``monitoring.slo``).
SLOS = ("availability", "latency", "freshness", "empty_answers")
#: Recording rule (deploy/prometheus/alerts.yml): share of the 30-day error budget left, by
#: ``slo`` and, for availability and empty_answers, ``surface``; 1 = untouched, < 0 = overspent.
SLO_BUDGET_REMAINING = "streamrec:slo_error_budget_remaining:ratio"
#: Recording rules: error ratio of each SLO over a window (``_rate5m`` … ``_rate30d``).
SLO_ERROR_RATIO = "streamrec:slo_errors:ratio_rate"
# --- server: the serving edge (issue 19) ----------------------------------------------------
#: ``reason`` label values of :data:`SERVING_REFUSED`.
SERVING_REFUSAL_REASONS = ("unauthenticated", "rate_limited", "overloaded")
SERVING_REFUSED = MetricSpec(
    "streamrec_serving_refused_total",
    "counter",
    ("method", "reason"),
    "Calls refused at the edge before their handler ran, by method and reason "
    "(unauthenticated: no or unknown API key; rate_limited: the caller's token bucket was "
    "empty; overloaded: serving_max_in_flight calls were in flight).",
    _S,
)
SERVING_IN_FLIGHT = MetricSpec(
    "streamrec_serving_in_flight",
    "gauge",
    (),
    "Recommender and Admin calls being handled (counted only while an edge check is on).",
    _S,
)

#: ``slot`` label of SERVING_ITEMS: an exploration slot or any other (ranked) item.
SERVED_SLOTS = ("ranked", "explored")
SERVING_ITEMS = MetricSpec(
    "streamrec_serving_items_total",
    "counter",
    ("surface", "slot"),
    "Items served in Recommend answers, by surface (bounded: see GRPC_ANSWERS) and slot: "
    "'explored' (an exploration slot, reason 'exploring') or 'ranked'; the exploration share "
    "is explored / all.",
    _S,
)

ALL_METRICS: tuple[MetricSpec, ...] = (
    EVENTS_PROCESSED,
    DEADLETTER,
    BATCH_SECONDS,
    REDIS_ROUNDTRIPS,
    JOIN_RATE,
    EVENT_LAG,
    NEWEST_EVENT_AGE,
    STATE_WRITE_AGE,
    CONSUMER_LAG,
    DRIFT_VALUE,
    DRIFT_EVALUABLE,
    DRIFT_THRESHOLD,
    ALERTS_FIRING,
    CTR_IMPRESSIONS,
    CTR_CLICKS,
    RETUNE_DECISION,
    RETUNE_SIGNALS_OUT,
    RETUNE_CTR_DROP_SECONDS,
    CATALOG_COVERAGE,
    LONG_TAIL_SHARE,
    SERVING_LATENCY,
    SERVING_ANSWERS,
    SERVING_EMPTY,
    SERVING_REDIS_ERRORS,
    EXPOSURE_BUFFER_DEPTH,
    EXPOSURE_DROPPED,
    SERVING_ROW_CACHE,
    SERVING_USER_CACHE,
    SERVING_STATE_AGE,
    SERVING_KILL_SWITCHES,
    SERVING_TRACES_DROPPED,
    GRPC_ANSWERS,
    SERVING_REFUSED,
    SERVING_IN_FLIGHT,
    SERVING_ITEMS,
)

METRICS_BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in ALL_METRICS}

#: Every series name that may appear in PromQL → its spec.
SERIES_NAMES: dict[str, MetricSpec] = {
    series: spec for spec in ALL_METRICS for series in spec.series_names
}


def metrics_for(process: Process) -> tuple[MetricSpec, ...]:
    """Specs exported by one process."""
    return tuple(spec for spec in ALL_METRICS if process in spec.processes)
