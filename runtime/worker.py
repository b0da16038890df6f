"""Worker process wiring: the faust app plus its metrics endpoint, batch observers and monitor.

Kept apart from :mod:`streams.app` so the app factory stays a pure adapter and the
benchmark can build apps without touching the process-wide Prometheus registry.
After each batch two observers run: :class:`BatchMetricsObserver` (counters, event lag) and
:meth:`runtime.worker_monitor.WorkerMonitor.observe` (drift windows). The worker monitor's
periodic task runs as a faust app task: started with the app, cancelled and awaited at
shutdown (it saves its state on the way out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import faust
from aiokafka.errors import KafkaError
from prometheus_client import start_http_server

from core.errors import UnavailableError
from core.settings import Settings
from monitoring.metrics import WorkerMetrics
from monitoring.monitor_io import failure_reason
from runtime.worker_monitor import WorkerMonitor
from schemas.events import Alert, encode_event
from schemas.topics import Topic
from streams.app import create_app
from streams.pipeline import BatchResult


class BatchMetricsObserver:
    """Turns each :class:`BatchResult` into Prometheus counters and freshness figures."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.newest_event_ts: dict[str, float] = {}
        self.last_write = 0.0
        self._joined = 0
        self._attempted = 0

    def __call__(self, result: BatchResult, seconds: float) -> None:
        m = self.metrics
        now = time.time()
        m.batch_seconds.observe(seconds)
        m.redis_roundtrips.labels("worker").inc(result.roundtrips)
        for topic, n in result.applied.items():
            m.events_processed.labels(topic).inc(n)
        for letter in result.dead_letters:
            topic = letter.source_topic.rsplit(".", 1)[-1]
            m.deadletter.labels(topic, letter.reason).inc()
        for record in result.records:
            ts = record.event.ts.timestamp()
            topic = record.topic.value
            m.event_lag.labels(topic).observe(max(0.0, now - ts))
            if ts > self.newest_event_ts.get(topic, 0.0):
                self.newest_event_ts[topic] = ts
        if result.applied:
            self.last_write = now
        self._joined += result.joined
        self._attempted += result.joined + result.pending
        if self._attempted:
            m.join_rate.set(self._joined / self._attempted)
        m.publish_ages(
            {t: max(0.0, now - ts) for t, ts in self.newest_event_ts.items()},
            max(0.0, now - self.last_write) if self.last_write else 0.0,
        )


def build_worker_app(settings: Settings) -> faust.App:
    """The production worker app: processor agent, metrics endpoint, observers, monitor."""
    metrics = WorkerMetrics()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.metrics_bind_host)
    batch_metrics = BatchMetricsObserver(metrics)
    monitor = WorkerMonitor(settings, metrics, lambda: dict(batch_metrics.newest_event_ts))

    def observer(result: BatchResult, seconds: float) -> None:
        batch_metrics(result, seconds)
        monitor.observe(result, seconds)

    app = create_app(settings, observer=observer)
    alerts = app.topic(
        settings.topic(Topic.ALERTS.value), value_serializer="raw", key_serializer="raw"
    )

    async def send_alerts(events: Sequence[Alert]) -> None:
        try:
            async with asyncio.timeout(settings.network_timeout_s * 2):
                futures = [
                    await alerts.send(key=a.alert_id.encode(), value=encode_event(a))
                    for a in events
                ]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError) as exc:
            raise UnavailableError(f"alerts topic: {failure_reason(exc)}") from exc

    monitor.send_alerts = send_alerts

    async def run_monitor() -> None:
        await monitor.run()

    app.task(run_monitor)

    app.conf.streamrec_monitor = monitor
    return app
