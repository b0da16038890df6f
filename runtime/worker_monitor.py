"""The worker's monitor: batches → drift windows; a periodic task → alerts, metrics, Redis.

:meth:`WorkerMonitor.observe` is called after every batch (from the agent, synchronously) and
feeds the batch's events into :class:`monitoring.monitor.Monitor` windows. :meth:`WorkerMonitor.run`
is the worker's background task: every ``monitor_interval_s`` it evaluates the drift signals
this worker owns (volume, event mix, items, cold start, dead-letter rate — see the ownership
table in :mod:`monitoring.lag_monitor`), produces the resulting ``alert.v1`` events, sets the
gauges (drift, firing alerts, event ages, consumer lag of the group), records the newest event
time per topic in Redis for ``streamrec monitor``, and writes its heartbeat with its last
health report for ``streamrec status``. The monitor state (windows ≈ 5 MB, open alerts) is
restored at start and saved every ``monitor_state_save_s`` and on shutdown.

Nothing here imports faust: the runtime passes the alert sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from core.errors import UnavailableError
from core.retry import retry
from core.settings import Settings
from monitoring.metrics import WorkerMetrics
from monitoring.monitor import Monitor, MonitorConfig, MonitorResult
from monitoring.monitor_io import MonitorStore, OffsetsProbe, heartbeat_ttl_s, process_doc
from monitoring.status_report import report_doc
from schemas.events import Alert, Exposure, Outcome
from schemas.keyspace import Keyspace
from streams.pipeline import BatchResult

log = logging.getLogger(__name__)

AlertSink = Callable[[Sequence[Alert]], Awaitable[None]]
ROLE = "worker"


def feed_batch(monitor: Monitor, result: BatchResult, now: float) -> None:
    """Count one batch's outcomes, exposures and dead letters in the monitor windows.

    Exposures are counted for volume only (``shown=0``): CTR per surface/variant is
    evaluated cluster-wide by ``streamrec monitor`` from the exposure-join counters.
    """
    o_ts: list[float] = []
    o_types: list[str] = []
    o_users: list[str] = []
    o_items: list[str] = []
    x_ts: list[float] = []
    x_surfaces: list[str] = []
    x_variants: list[str] = []
    for record in result.records:
        event = record.event
        if isinstance(event, Outcome):
            o_ts.append(event.ts.timestamp())
            o_types.append(event.event_type.value)
            o_users.append(event.user_id)
            o_items.append(event.item_id)
        elif isinstance(event, Exposure):
            x_ts.append(event.ts.timestamp())
            x_surfaces.append(event.context.surface)
            x_variants.append(event.variant)
    windows = monitor.windows
    if o_ts:
        windows.add_outcomes(now, o_ts, o_types, o_users, o_items)
    if x_ts:
        windows.add_exposures(now, x_ts, x_surfaces, x_variants, [0] * len(x_ts))
    if result.dead_letters:
        windows.add_deadletters(
            now,
            [letter.ts.timestamp() for letter in result.dead_letters],
            [letter.reason for letter in result.dead_letters],
        )


class WorkerMonitor:
    """Owns the worker's :class:`Monitor` and its periodic evaluation task."""

    def __init__(
        self,
        settings: Settings,
        metrics: WorkerMetrics,
        newest_event_ts: Callable[[], dict[str, float]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``newest_event_ts`` returns this worker's newest processed event time per topic."""
        self.settings = settings
        self.metrics = metrics
        self.newest_event_ts = newest_event_ts
        self.clock = clock
        self.config = MonitorConfig.from_settings(settings)
        self.keys = Keyspace(settings.key_prefix)
        self.monitor: Monitor | None = None
        self.instance = ""
        self.send_alerts: AlertSink | None = None
        self.pending: list[Alert] = []
        self.skipped_events = 0
        self.last_result: MonitorResult | None = None
        self.last_write = 0.0
        self._store: MonitorStore | None = None
        self._probe = OffsetsProbe(settings)
        self._saved_at = 0.0
        self._started_at = clock()
        self._state_ttl = int(
            max(86_400.0, 2 * (self.config.window.reference_s + self.config.window.window_s))
        )
        self._hb_ttl = heartbeat_ttl_s(settings.monitor_interval_s)

    # --- per batch ---------------------------------------------------------------------------
    def observe(self, result: BatchResult, seconds: float) -> None:
        """Batch observer: feed the monitor windows (never raises into the agent)."""
        if result.applied:
            self.last_write = self.clock()
        if self.monitor is None:  # state not restored yet: these events are not counted
            self.skipped_events += len(result.records) + len(result.dead_letters)
            return
        try:
            feed_batch(self.monitor, result, self.clock())
        except ValueError:
            log.exception("monitor could not count a batch")

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to Redis, claim an instance name, restore the persisted state."""
        s = self.settings
        now = self.clock()
        self._store = await MonitorStore.connect(
            s.redis_url, self.keys, timeout_s=s.network_timeout_s, attempts=10
        )
        self.instance = await self._store.claim_instance(ROLE, s.monitor_instance, self._hb_ttl)
        state = None
        try:
            state = await self._store.load_state(ROLE, self.instance)
            self.monitor = Monitor(self.config, started_at=now, state=state)
        except ValueError as exc:  # a state from another version or config: start afresh
            log.warning("monitor state of %s not restored: %s", self.instance, exc)
            self.monitor = Monitor(self.config, started_at=now)
        self._saved_at = now
        log.info(
            "worker monitor %s started (%s state)",
            self.instance,
            "restored" if state is not None else "new",
        )

    async def run(self) -> None:
        """The background task: evaluate every interval until cancelled, then save."""
        try:
            interval = self.settings.monitor_interval_s
            await retry(  # Redis may come later than the worker: processing goes on meanwhile
                self.start,
                what="worker monitor start",
                attempts=None,
                initial_s=interval,
                max_s=interval,
                retry_on=(UnavailableError,),
                logger=log,
            )
            while True:
                await asyncio.sleep(self.settings.monitor_interval_s)
                try:
                    await self.tick()
                except Exception:  # a monitoring fault must never stop the processing
                    log.exception("worker monitor evaluation failed")
        finally:
            # shielded: the final save must not be cut short by the cancellation
            await asyncio.shield(self.close())

    async def close(self) -> None:
        """Final save, heartbeat removal, clients closed (idempotent)."""
        store, self._store = self._store, None
        await self._probe.stop()
        if store is None:
            return
        try:
            if self.monitor is not None:
                await self._save(store)
            await store.delete_heartbeat(ROLE, self.instance)
        except UnavailableError as exc:
            log.warning("monitor state not saved at shutdown: %s", exc)
        finally:
            await store.aclose()

    async def _save(self, store: MonitorStore) -> None:
        assert self.monitor is not None
        size = await store.save_state(ROLE, self.instance, self.monitor.state(), self._state_ttl)
        self._saved_at = self.clock()
        log.debug("monitor state saved (%d bytes)", size)

    # --- periodic evaluation -------------------------------------------------------------------
    async def _lags(self) -> dict[tuple[str, int], int] | None:
        sample = await self._probe.try_sample()
        return None if sample is None else sample.lags

    async def tick(self) -> MonitorResult:
        """One evaluation (the drift alerts this worker owns) and its side effects."""
        assert self.monitor is not None and self._store is not None
        now = self.clock()
        # lag and freshness alerts belong to `streamrec monitor`: not evaluated here
        result = self.monitor.evaluate(now, event_ages={})
        self.last_result = result
        m = self.metrics
        m.publish_drift(result.drift)
        m.publish_alerts(result.firing_counts)
        newest = self.newest_event_ts()
        m.publish_ages(
            {t: max(0.0, now - ts) for t, ts in newest.items()},
            # never written: at least as old as this monitor (finite, for PromQL min())
            max(0.0, now - (self.last_write or self._started_at)),
        )
        lags = await self._lags()
        if lags is not None:
            m.publish_lags(lags)
        await self._publish(result.alerts)
        store = self._store
        try:
            await store.record_newest(newest)
            doc = process_doc(
                ROLE,
                self.instance,
                interval_s=self.settings.monitor_interval_s,
                skipped_events=self.skipped_events,
                pending_alerts=len(self.pending),
                report=report_doc(result.health, self.monitor.alerts.firing()),
            )
            await store.write_heartbeat(ROLE, self.instance, doc, self._hb_ttl)
            if now - self._saved_at >= self.settings.monitor_state_save_s:
                await self._save(store)
        except UnavailableError as exc:
            log.warning("monitor could not write to Redis: %s", exc)
        return result

    async def _publish(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            log.warning(
                "alert %s %s %s: %s", alert.state, alert.severity.value, alert.alert_id, alert.cause
            )
        self.pending.extend(alerts)
        del self.pending[: max(0, len(self.pending) - 1000)]
        if not self.pending or self.send_alerts is None:
            return
        batch = list(self.pending)
        try:
            await self.send_alerts(batch)
        except (UnavailableError, TimeoutError, OSError) as exc:
            log.warning("%d alert events not sent yet: %s", len(batch), exc)
            return
        del self.pending[: len(batch)]
