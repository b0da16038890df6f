"""Prometheus metrics of the server, built from the shared specs in ``schemas.metrics``.

They live in their own registry (:data:`REGISTRY`), served by ``/metrics`` on
``server_metrics_port``, so a process that also imports the worker's metrics never sees a
duplicate registration.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from schemas import metrics as names
from schemas.metrics import build_metric
from serving.ranker import Stage

REGISTRY = CollectorRegistry(auto_describe=True)


LATENCY = build_metric(names.SERVING_LATENCY, REGISTRY, Histogram)
ANSWERS = build_metric(names.SERVING_ANSWERS, REGISTRY, Counter)
EMPTY_ANSWERS = build_metric(names.SERVING_EMPTY, REGISTRY, Counter)
REDIS_ERRORS = build_metric(names.SERVING_REDIS_ERRORS, REGISTRY, Counter)
REDIS_ROUNDTRIPS = build_metric(names.REDIS_ROUNDTRIPS, REGISTRY, Counter)
EXPOSURE_BUFFER_DEPTH = build_metric(names.EXPOSURE_BUFFER_DEPTH, REGISTRY, Gauge)
EXPOSURE_DROPPED = build_metric(names.EXPOSURE_DROPPED, REGISTRY, Counter)
ROW_CACHE = build_metric(names.SERVING_ROW_CACHE, REGISTRY, Counter)
USER_CACHE = build_metric(names.SERVING_USER_CACHE, REGISTRY, Counter)
STATE_AGE = build_metric(names.SERVING_STATE_AGE, REGISTRY, Gauge)

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
