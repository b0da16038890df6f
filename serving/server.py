"""The grpc.aio server: Recommender + Admin + health + reflection + Prometheus ``/metrics``.

Lifecycle (:class:`Server`): ``start()`` connects Redis (tolerating it being down), loads the
caches, starts the exposure sender, binds ``grpc_addr`` and marks every service SERVING.
``stop(grace)`` marks them NOT_SERVING, stops taking new calls, lets in-flight calls finish
within ``grace``, then stops background tasks (cancelled and awaited) and flushes exposures.
:func:`run_server` runs one until SIGTERM / SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.errors import ConfigError
from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.ids import Pseudonyms
from serving.admin_servicer import AdminServicer
from serving.admin_store import AdminStore
from serving.auth import DEFAULT_ADMIN_TOKEN, check_admin_token
from serving.edge import EdgePolicy, Scope
from serving.edge_tls import edge_tls_summary, server_credentials
from serving.exposure_log import ExposureLog
from serving.health import HealthServicer
from serving.metrics import SurfaceLabels, serve_metrics
from serving.recommender import Recommender
from serving.request_guard import MalformedRequestInterceptor
from serving.servicer import RecommenderServicer
from serving.status_metrics import AnswerStatusInterceptor
from serving.traces import TraceLog

log = logging.getLogger("streamrec.serving")

RECOMMENDER_SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name
ADMIN_SERVICE = pb.DESCRIPTOR.services_by_name["Admin"].full_name
SERVICE_NAMES: tuple[str, ...] = (RECOMMENDER_SERVICE, ADMIN_SERVICE)
#: time a shutdown step may take past the grace period before the stop goes on without it
STOP_SLACK_S = 2.0
#: which edge checks each service's calls go through (health and reflection: none)
EDGE_SCOPES = {RECOMMENDER_SERVICE: Scope.KEYED, ADMIN_SERVICE: Scope.CAPPED}


class Server:
    """One serving process. Use ``async with Server(settings) as server:`` or start/stop."""

    def __init__(self, settings: Settings, *, log_exposures: bool = True) -> None:
        self.settings = settings
        self.log_exposures = log_exposures
        self.port = 0
        self.recommender: Recommender | None = None
        self.exposures: ExposureLog | None = None
        self.traces: TraceLog | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: Any = None
        self._metrics_http: WSGIServer | None = None

    @property
    def address(self) -> str:
        host = self.settings.grpc_addr.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Start everything; raise ConfigError when the address cannot be bound. Idempotent."""
        if self._grpc is not None:
            return
        settings = self.settings
        check_admin_token(settings.admin_token, settings.grpc_addr)
        recommender = await Recommender.create(settings)
        started: grpc.aio.Server | None = None
        exposures: ExposureLog | None = None
        try:
            exposures = ExposureLog.from_settings(settings) if self.log_exposures else None
            traces = TraceLog.from_settings(recommender.reader.redis, settings)
            surfaces = SurfaceLabels(settings.slo_surfaces)
            server = grpc.aio.server(
                options=[("grpc.so_reuseport", 0)],
                # AnswerStatusInterceptor first: it counts what the guards after it reject
                # the guard last: it caches each method's wrapped handler
                interceptors=[
                    AnswerStatusInterceptor(surfaces),
                    MalformedRequestInterceptor(EdgePolicy.from_settings(settings), EDGE_SCOPES),
                ],
            )
            pb_grpc.add_RecommenderServicer_to_server(
                RecommenderServicer(
                    recommender,
                    exposures,
                    surfaces=surfaces,
                    traces=traces,
                    pseudonyms=Pseudonyms.from_settings(settings),
                ),
                server,
            )
            store = AdminStore(
                recommender.reader.redis,
                recommender.reader.keys,
                timeout_s=settings.network_timeout_s,
                versions_kept=settings.admin_versions_kept,
            )
            pb_grpc.add_AdminServicer_to_server(
                AdminServicer(store, recommender, settings.admin_token), server
            )
            health_servicer = HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable_server_reflection(
                (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            credentials = server_credentials(settings)
            try:
                if credentials is None:
                    self.port = server.add_insecure_port(settings.grpc_addr)
                else:
                    self.port = server.add_secure_port(settings.grpc_addr, credentials)
            except RuntimeError as exc:
                raise ConfigError(f"cannot listen on {settings.grpc_addr}: {exc}") from exc
            await server.start()
            started = server
            for name in ("", *SERVICE_NAMES):
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
            if exposures is not None:
                await exposures.start()
            if traces is not None:
                await traces.start()
            self._metrics_http = serve_metrics(
                settings.server_metrics_port, settings.metrics_bind_host
            )
        except BaseException:
            if started is not None:  # a later step failed: release the port and the tasks
                await started.stop(0)
            if exposures is not None:
                await exposures.stop(0)
            await recommender.aclose()
            raise
        self.recommender, self.exposures, self.traces = recommender, exposures, traces
        self._grpc, self._health = server, health_servicer
        log.info(
            "serving on %s (%s; metrics on %s:%s)",
            self.address,
            edge_tls_summary(settings),
            settings.metrics_bind_host,
            settings.server_metrics_port or "off",
        )
        if settings.admin_token.get_secret_value() == DEFAULT_ADMIN_TOKEN:
            log.warning("STREAMREC_ADMIN_TOKEN is the default: allowed on loopback only (dev)")

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, drain calls, stop tasks, flush exposures. Idempotent."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        server, self._grpc = self._grpc, None
        if server is None:
            return
        if self._health is not None:  # waits on each watched service's lock: bounded
            await _bounded(
                self._health.enter_graceful_shutdown(), max(grace, STOP_SLACK_S), "health"
            )
        # every step bounded: a stop that waits for ever holds the process (or a test run)
        await _bounded(server.stop(grace), grace + STOP_SLACK_S, "gRPC server stop")
        if self.exposures is not None:
            await self.exposures.stop(grace)
        if self.traces is not None:
            await self.traces.stop(grace)
        if self.recommender is not None:
            await self.recommender.aclose()
        if self._metrics_http is not None:
            http, self._metrics_http = self._metrics_http, None
            # shutdown() waits for serve_forever's poll (0.5 s); never for ever
            await _bounded(asyncio.to_thread(http.shutdown), STOP_SLACK_S, "/metrics shutdown")
            http.server_close()
        log.info("stopped")

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.stop())


async def _bounded(step: Awaitable[None], timeout_s: float, what: str) -> None:
    """Await one shutdown step for at most ``timeout_s``; past it, log one line and go on."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except TimeoutError:
        log.warning("%s did not finish within %.1f s; going on", what, timeout_s)


def settle_heap() -> None:
    """Collect once, then move every object alive now out of the cyclic GC's sight.

    After start-up the heap holds the imports and the loaded caches; each full (generation 2)
    collection walked all of it and stalled the event loop for ~60 ms on the 100k-item bench
    — a p99 spike every few seconds under load. Frozen objects are still freed by reference
    counting when dropped (a refreshed cache replaces the frozen one); only cycles among them
    would outlive their use. Called once the server has started.
    """
    gc.collect()
    gc.freeze()


async def run_server(
    settings: Settings, *, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Run a server until one of ``signals`` arrives, then stop it gracefully."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        async with Server(settings):
            settle_heap()
            await stopping.wait()
            log.info("signal received: draining for up to %.1fs", settings.shutdown_grace_s)
    finally:
        for sig in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
