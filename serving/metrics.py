"""Prometheus metrics of the server, built from the shared specs in ``schemas.metrics``.

They live in their own registry (:data:`REGISTRY`), served by ``/metrics`` on
``server_metrics_port``, so a process that also imports the worker's metrics never sees a
duplicate registration.
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from schemas import metrics as names
from schemas.events import Context
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
KILL_SWITCHES = build_metric(names.SERVING_KILL_SWITCHES, REGISTRY, Gauge)
TRACES_DROPPED = build_metric(names.SERVING_TRACES_DROPPED, REGISTRY, Counter)
GRPC_ANSWERS = build_metric(names.GRPC_ANSWERS, REGISTRY, Counter)
REFUSED = build_metric(names.SERVING_REFUSED, REGISTRY, Counter)  # serving edge (issue 19)
IN_FLIGHT = build_metric(names.SERVING_IN_FLIGHT, REGISTRY, Gauge)
SERVED_ITEMS = build_metric(names.SERVING_ITEMS, REGISTRY, Counter)  # exploration share

#: ``stage`` label of the answers counter (the metric calls a non-fallback answer "primary").
STAGE_LABEL: dict[Stage, str] = {
    Stage.NONE: names.SERVING_STAGES[0],
    Stage.SEGMENT_POPULARITY: "segment_popularity",
    Stage.GLOBAL_POPULARITY: "global_popularity",
    Stage.LAST_KNOWN: "last_known",
    Stage.KILL_SWITCH: "kill_switch",
}
#: ``role`` label of the round-trip counter: request path vs background cache refreshes.
ROLE_REQUEST = "serving"
ROLE_BACKGROUND = "serving_background"


#: Surface of a request that names none (the default of the events' context).
DEFAULT_SURFACE: str = Context.model_fields["surface"].default


class SurfaceLabels:
    """The ``surface`` label of a request's surface: itself when listed, else ``other``.

    An empty surface is the default one (``home``), as for the ranker. The listed surfaces are
    ``slo_surfaces``; bounding them keeps a client from creating series at will.
    """

    __slots__ = ("_known",)

    def __init__(self, surfaces: Iterable[str]) -> None:
        self._known = frozenset(surfaces)

    def __call__(self, surface: str) -> str:
        surface = surface or DEFAULT_SURFACE
        return surface if surface in self._known else names.SURFACE_OTHER


def serve_metrics(port: int, addr: str = "0.0.0.0") -> WSGIServer | None:
    """Start the ``/metrics`` HTTP endpoint in a daemon thread (port 0 = do not start).

    Returns the HTTP server (call ``shutdown()`` to stop it) or None when not started.
    """
    if not port:
        return None
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server
