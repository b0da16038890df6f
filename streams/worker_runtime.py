"""Worker process wiring: the faust app plus its metrics endpoint and batch observer.

Kept apart from :mod:`streams.app` so the app factory stays a pure adapter and the
benchmark can build apps without touching the process-wide Prometheus registry.
"""

from __future__ import annotations

import time

import faust
from prometheus_client import start_http_server

from streamrec.settings import Settings
from streams.app import create_app
from streams.metrics import WorkerMetrics
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
    """The production worker app: processor agent, metrics endpoint, batch observer."""
    metrics = WorkerMetrics()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="0.0.0.0")
    return create_app(settings, observer=BatchMetricsObserver(metrics))
