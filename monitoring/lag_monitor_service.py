"""``streamrec monitor`` runtime: samples Kafka and Redis, runs :class:`LagMonitor`, emits alerts.

Every ``monitor_interval_s``: consumer lag and end offsets of the worker group (Kafka), the
newest processed event per topic, the newest state write, the exposure-join counters and the
catalog coverage / long-tail counts (:mod:`monitoring.coverage`), the workers' heartbeat
reports (Redis; their plan drift signals feed the re-tune decision) →
:meth:`LagMonitor.evaluate` → ``alert.v1`` events on the alerts topic (keyed by
``alert_id``), gauges on its own ``/metrics`` (``monitor_metrics_port``), a heartbeat with its
health report (read by ``streamrec status``) and its state (open alerts, CTR windows, silence
tracker) in Redis, restored at start. A source that cannot be reached is skipped for that
round (logged); the process keeps running.

Run exactly one per deployment: it is the single emitter of the lag, freshness, silence and
CTR alerts (see :mod:`monitoring.lag_monitor`); a second one would emit them twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from core.errors import UnavailableError
from core.settings import Settings
from monitoring.coverage import CoverageMetrics, CoverageReading, coverage_of, read_coverage_inputs
from monitoring.lag_monitor import LagMonitor, LagMonitorResult
from monitoring.metrics import CtrCountersCollector, RetuneMetrics, WorkerMetrics
from monitoring.monitor import MonitorConfig
from monitoring.monitor_io import (
    AlertProducer,
    FreshnessReading,
    MonitorStore,
    OffsetSample,
    OffsetsProbe,
    heartbeat_ttl_s,
    process_doc,
)
from monitoring.retune import SignalOut, signals_out_in_reports
from monitoring.status_report import report_doc
from schemas.keyspace import Keyspace

log = logging.getLogger(__name__)
ROLE = "monitor"


class MonitorMetrics(WorkerMetrics):
    """The worker's metric families this process exports (lag, ages, CTR drift, alerts).

    Label-less worker series (batch histogram, join rate, state write age) are unregistered:
    exported from here they would read 0 and hide a dead worker from the
    ``absent(streamrec_state_write_age_seconds)`` / ``min(...)`` rules.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        for collector in (self.batch_seconds, self.join_rate, self.state_write_age):
            registry.unregister(collector)


class LagMonitorService:
    """Sampling loop of the independent monitor process."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.metrics = MonitorMetrics(self.registry)
        self.retune_metrics = RetuneMetrics(self.registry)
        self.ctr_counters = CtrCountersCollector(settings.slo_surfaces, self.registry)
        self.coverage_metrics = CoverageMetrics(self.registry)
        self.last_coverage: CoverageReading | None = None
        self.config = MonitorConfig.from_settings(settings)
        self.keys = Keyspace(settings.key_prefix)
        self.monitor: LagMonitor | None = None
        self.instance = ""
        self.last_result: LagMonitorResult | None = None
        self._store: MonitorStore | None = None
        self._probe = OffsetsProbe(settings)
        self._producer = AlertProducer(settings)
        self._hb_ttl = heartbeat_ttl_s(settings.monitor_interval_s)
        self._state_ttl = int(
            max(86_400.0, 2 * (self.config.window.reference_s + self.config.window.window_s))
        )

    async def start(self) -> None:
        """Connect to Redis, claim a name, restore the state (raises UnavailableError)."""
        s = self.settings
        now = self.clock()
        store = await MonitorStore.connect(s.redis_url, self.keys, timeout_s=s.network_timeout_s)
        try:
            others = await store.read_heartbeats(ROLE)
            self.instance = await store.claim_instance(ROLE, s.monitor_instance, self._hb_ttl)
            live = [d.get("instance") for d in others if d.get("instance") != self.instance]
            if live:
                log.warning(
                    "another streamrec monitor is running (%s): its alerts and "
                    "these will be emitted twice",
                    ", ".join(map(str, live)),
                )
            # one deployment, one monitor: the state follows the role, not the host
            state = await store.load_state(ROLE, "lag")
            try:
                self.monitor = LagMonitor(self.config, started_at=now, state=state)
            except ValueError as exc:
                log.warning("monitor state not restored: %s", exc)
                self.monitor = LagMonitor(self.config, started_at=now)
        except BaseException:
            await store.aclose()
            raise
        self._store = store

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate every interval until ``stop`` is set; then save and close."""
        interval = self.settings.monitor_interval_s
        try:
            while self.monitor is None:
                try:
                    await self.start()
                except UnavailableError as exc:
                    log.warning("monitor cannot start yet: %s", exc)
                    if await _wait(stop, interval):
                        return
            while True:
                try:
                    await self.tick()
                except Exception:  # keep watching: log the fault, try again next round
                    log.exception("monitor evaluation failed")
                if await _wait(stop, interval):
                    return
        finally:
            await asyncio.shield(self.close())

    async def close(self) -> None:
        await self._probe.stop()
        await self._producer.stop()
        store, self._store = self._store, None
        if store is None:
            return
        try:
            await self._save(store)
            await store.delete_heartbeat(ROLE, self.instance)
        except UnavailableError as exc:
            log.warning("monitor state not saved at shutdown: %s", exc)
        finally:
            await store.aclose()

    async def _save(self, store: MonitorStore) -> None:
        if self.monitor is not None:
            await store.save_state(ROLE, "lag", self.monitor.state(), self._state_ttl)

    async def _offsets(self) -> OffsetSample | None:
        return await self._probe.try_sample()

    async def tick(self) -> LagMonitorResult:
        """One sampling round and its side effects."""
        assert self.monitor is not None and self._store is not None
        store = self._store
        offsets = await self._offsets()
        freshness: FreshnessReading | None = None
        counters: dict[str, int] | None = None
        worker_signals: list[SignalOut] = []
        try:
            freshness = await store.read_freshness()
            # read before the counters: a decision is only made with both (counters not None)
            worker_signals = signals_out_in_reports(await store.read_heartbeats("worker"))
            counters = await store.read_ctr_counters()
        except UnavailableError as exc:
            log.warning("Redis not read: %s", exc)
        now = self.clock()
        coverage = await self._coverage(store, now)
        result = self.monitor.evaluate(
            now,
            offsets=offsets,
            freshness=freshness,
            ctr_counters=counters,
            worker_signals=worker_signals,
        )
        self.last_result = result
        m = self.metrics
        if offsets is not None:
            m.publish_lags(offsets.lags)
        for topic, age in result.event_ages.items():
            if age != float("inf"):
                m.newest_event_age.labels(topic).set(age)
        m.publish_drift(result.drift)
        m.publish_alerts(result.firing_counts)
        if counters is not None:
            self.ctr_counters.publish(counters)
        if result.retune is not None:
            self.retune_metrics.publish(result.retune, result.ctr_drop_s)
        for alert in result.alerts:
            log.warning(
                "alert %s %s %s: %s", alert.state, alert.severity.value, alert.alert_id, alert.cause
            )
        try:
            await self._producer.send(result.alerts)
        except UnavailableError as exc:
            log.warning("%d alert events not sent yet: %s", len(self._producer.pending), exc)
        try:
            doc = process_doc(
                ROLE,
                self.instance,
                interval_s=self.settings.monitor_interval_s,
                pending_alerts=len(self._producer.pending),
                dropped_alerts=self._producer.dropped,
                report=report_doc(result.health, self.monitor.alerts.firing()),
                retune=None if result.retune is None else result.retune.to_doc(),
                coverage=None if coverage is None else coverage.to_doc(),
            )
            await store.write_heartbeat(ROLE, self.instance, doc, self._hb_ttl)
            await self._save(store)
        except UnavailableError as exc:
            log.warning("monitor could not write to Redis: %s", exc)
        return result

    async def _coverage(self, store: MonitorStore, now: float) -> CoverageReading | None:
        """Catalog coverage and long-tail share of the last window (None: Redis not read)."""
        s = self.settings
        try:
            inputs = await read_coverage_inputs(
                store.client,
                self.keys,
                now,
                window_s=s.coverage_window_s,
                bucket_s=s.coverage_bucket_s,
                timeout_s=s.network_timeout_s,
            )
        except UnavailableError as exc:
            log.warning("coverage not read: %s", exc)
            return None
        reading = coverage_of(
            inputs, head_share=s.coverage_head_share, window_s=s.coverage_window_s
        )
        self.coverage_metrics.publish(reading)
        self.last_coverage = reading
        return reading


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``stop``; True when it is set."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True
