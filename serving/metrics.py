"""Prometheus metrics of the server, built from the shared specs in ``schemas.metrics``.

They live in their own registry (:data:`REGISTRY`), served by ``/metrics`` on
``server_metrics_port``, so a process that also imports the worker's metrics never sees a
duplicate registration.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from schemas import metrics as names
from serving.ranker import Stage

REGISTRY = CollectorRegistry(auto_describe=True)


def _short(full: str) -> str:
    return full.removesuffix("_total")


LATENCY = Histogram(
    names.SERVING_LATENCY.name,
    names.SERVING_LATENCY.help,
    names.SERVING_LATENCY.labels,
    buckets=names.SERVING_LATENCY.buckets or Histogram.DEFAULT_BUCKETS,
    registry=REGISTRY,
)
ANSWERS = Counter(
    _short(names.SERVING_ANSWERS.name),
    names.SERVING_ANSWERS.help,
    names.SERVING_ANSWERS.labels,
    registry=REGISTRY,
)
EMPTY_ANSWERS = Counter(
    _short(names.SERVING_EMPTY.name),
    names.SERVING_EMPTY.help,
    names.SERVING_EMPTY.labels,
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    _short(names.SERVING_REDIS_ERRORS.name), names.SERVING_REDIS_ERRORS.help, registry=REGISTRY
)
REDIS_ROUNDTRIPS = Counter(
    _short(names.REDIS_ROUNDTRIPS.name),
    names.REDIS_ROUNDTRIPS.help,
    names.REDIS_ROUNDTRIPS.labels,
    registry=REGISTRY,
)
EXPOSURE_BUFFER_DEPTH = Gauge(
    names.EXPOSURE_BUFFER_DEPTH.name, names.EXPOSURE_BUFFER_DEPTH.help, registry=REGISTRY
)
EXPOSURE_DROPPED = Counter(
    _short(names.EXPOSURE_DROPPED.name), names.EXPOSURE_DROPPED.help, registry=REGISTRY
)
ROW_CACHE = Counter(
    _short(names.SERVING_ROW_CACHE.name),
    names.SERVING_ROW_CACHE.help,
    names.SERVING_ROW_CACHE.labels,
    registry=REGISTRY,
)
USER_CACHE = Counter(
    _short(names.SERVING_USER_CACHE.name),
    names.SERVING_USER_CACHE.help,
    names.SERVING_USER_CACHE.labels,
    registry=REGISTRY,
)
STATE_AGE = Gauge(names.SERVING_STATE_AGE.name, names.SERVING_STATE_AGE.help, registry=REGISTRY)

#: ``stage`` label of the answers counter (the metric calls a non-fallback answer "primary").
STAGE_LABEL: dict[Stage, str] = {
    Stage.NONE: names.SERVING_STAGES[0],
    Stage.SEGMENT_POPULARITY: "segment_popularity",
    Stage.GLOBAL_POPULARITY: "global_popularity",
    Stage.LAST_KNOWN: "last_known",
}
#: ``role`` label of the round-trip counter: request path vs background cache refreshes.
ROLE_REQUEST = "serving"
ROLE_BACKGROUND = "serving_background"


def serve_metrics(port: int, addr: str = "0.0.0.0") -> WSGIServer | None:
    """Start the ``/metrics`` HTTP endpoint in a daemon thread (port 0 = do not start).

    Returns the HTTP server (call ``shutdown()`` to stop it) or None when not started.
    """
    if not port:
        return None
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server
