"""The monitor: windows + drift + freshness + lag → alerts and status, in one pure object.

The worker's timers feed events into :attr:`Monitor.windows` and call
:meth:`Monitor.evaluate` every ``monitor_interval_s`` with ``now`` and the inputs only it can
measure (consumer lag, age of the newest state write). The result holds the drift report
(for ``streamrec_drift_*`` gauges), the ``alert.v1`` events to publish, and the health
report (``streamrec status``). Nothing here reads a clock or does I/O; persist
:meth:`Monitor.state` (alerts + windows) and pass it back after a restart.

Several workers: each worker's monitor sees the partitions it owns. Users are partition-keyed,
so mix, items, cold start and CTR are fair samples per worker; the *volume* of one worker
changes when a rebalance moves partitions, so the cluster-wide volume check is the Prometheus
rule (``StreamrecDriftVolume``, computed from the summed counters).

Thresholds (Settings defaults) and why
--------------------------------------
* ``lag_warn`` 10 000 / ``lag_crit`` 100 000 events per partition — the worker takes batches
  of 500, so a healthy consumer is at most a few batches behind; 20 batches queued means it
  is not keeping up, 200 means minutes of backlog at typical rates.
* ``freshness_warn_s`` 60 / ``freshness_crit_s`` 300 — live interaction streams are never
  silent for a minute; five minutes (one drift window) means popularity and trending state
  are visibly stale. Applied to the newest processed event of ``freshness_topics``, to the
  newest state write and to the server's state age.
* ``drift_window_s`` 300, ``drift_reference_windows`` 12 (one hour), buckets of 10 s: five
  minutes holds enough events for the statistics at modest traffic, an hour of reference
  smooths minute-scale noise but still follows the daily cycle (a traffic ramp rarely doubles
  within an hour). Drift alerts are about *change*: once a shift persists for an hour the
  reference has absorbed it and the alert resolves.
* ``drift_min_events`` 500 — below that the sampling noise of PSI/JS on ~50 bins is no longer
  small against the thresholds (expected JS of two samples is ≈ (k−1)/(8 ln2)·(1/n₁+1/n₂)
  ≈ 0.02 bit at n = 500, a fifth of the threshold).
* ``drift_volume_ratio`` 2 (alerts at ≥ 2× or ≤ ½ the reference rate) — Poisson noise of a
  window is a few percent, daily ramps stay within ±50 % per hour; doubling or halving is an
  incident (bot traffic, a producer outage or duplicate producer).
* ``drift_mix_psi`` 0.25 — the standard "major shift" cut-off of the population stability
  index; sampling noise on 6 event types at 500 events is ≈ 0.01.
* ``drift_items_js`` 0.1 bit over the top 50 items + other — moving a fraction f of the traffic
  to items outside the reference gives JS ≈ 0.11 bit at f = 0.2 and 0.61 bit at f = 0.8;
  ordinary trending churn stays well below.
* ``drift_coldstart_delta`` 0.10 — an absolute rise of ten points in the share of events from
  never-seen users (or items) is a bot flood, an id-format change or a catalog re-key; the
  share's standard error at 500 events is ≤ 2.2 points. Only rises alert (the share falls
  naturally while the seen-set warms up).
* ``drift_ctr_rel_drop`` 0.3 with ``drift_ctr_z`` 3.5 and ≥ 1000 impressions per window —
  a 30 % CTR drop on a surface/variant is a product incident (broken ranking, images,
  tracking); experiment-size effects belong to the A/B analysis. The z guard (one-sided
  p ≈ 2·10⁻⁴) keeps ~1000 (pair × window) comparisons a day from alarming on noise.
* ``deadletter_rate_warn`` 1 % / ``_crit`` 5 % — producers validate against the exported JSON
  Schema, so the base rate is ~0; 1 % is one broken producer or field, 5 % a whole stream.
* ``alert_min_duration_s`` 60 — six evaluations; rides out a GC pause, a slow batch or a
  consumer-group rebalance (typically 10–45 s) without paging.
* ``alert_clear_ratio`` 0.8 — the 20 % band is wider than the statistics' sampling noise at
  the minimum sample sizes, so a value sitting on its threshold does not fire/resolve/fire.
* ``drift_plan_*`` — the product plans' thresholds (KL 0.1, CTR drop 15 % sustained for
  15 min, volume change 30 %, never-seen share change 25 %): plan signals on the same windows
  that raise no alert of their own but feed :mod:`monitoring.retune`'s re-tune decision
  (made by ``streamrec monitor``).
* ``serving_p99_warn_s`` 50 ms / ``_crit`` 250 ms — 50 ms is a usual budget for a
  recommendation call inside a page render; 250 ms is the server's own request budget
  (``request_timeout_s``), past which answers come from fallbacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError
from core.settings import Settings, setting_attr, settings_values
from monitoring.alerting import AlertManager, AlertPolicy, Observation
from monitoring.drift import DriftReport, DriftThresholds, evaluate_drift
from monitoring.health import HealthReport, HealthThresholds, evaluate_health
from monitoring.levels import level_for
from monitoring.retune import RetuneConfig
from monitoring.windows import WindowAccumulator, WindowConfig
from schemas.events import Alert


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Everything the monitor needs, built once from Settings."""

    window: WindowConfig = field(default_factory=WindowConfig)
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    alerts: AlertPolicy = field(default_factory=AlertPolicy)
    health: HealthThresholds = field(default_factory=HealthThresholds)
    retune: RetuneConfig = field(default_factory=RetuneConfig)
    freshness_topics: tuple[str, ...] = setting_attr("freshness_topics")

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorConfig:
        """Build from Settings; raises :class:`ConfigError` naming a bad threshold pair."""
        try:
            return cls(
                window=WindowConfig.from_settings(settings),
                drift=DriftThresholds.from_settings(settings),
                alerts=AlertPolicy.from_settings(settings),
                health=HealthThresholds.from_settings(settings),
                retune=RetuneConfig.from_settings(settings),
                **settings_values(cls, settings),
            )
        except ValueError as exc:
            raise ConfigError(f"monitoring settings: {exc}") from exc


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """Outcome of one evaluation."""

    drift: DriftReport
    alerts: tuple[Alert, ...]
    """``alert.v1`` events to publish now (usually empty)."""
    health: HealthReport
    event_ages: Mapping[str, float]
    """Age of the newest event per freshness topic."""
    firing_counts: Mapping[tuple[str, str], int]
    """(kind, severity) → firing alerts, for ``streamrec_alerts_firing``."""


def drift_observations(report: DriftReport) -> list[Observation]:
    """One alert observation per drift signal (plan signals feed the re-tune decision instead)."""
    return [
        Observation(
            kind=s.kind,
            value=s.value,
            level=s.level,
            warn=s.threshold,
            crit=s.crit_threshold,
            direction=s.direction,
            labels=s.labels,
            window_s=report.window_s,
            cause=s.cause,
            evaluable=s.evaluable,
        )
        for s in report.signals
        if not s.plan
    ]


def lag_observations(
    lags: Mapping[tuple[str, int], int], th: HealthThresholds
) -> list[Observation]:
    """One observation per topic: the largest partition lag."""
    worst: dict[str, tuple[int, int]] = {}
    for (topic, partition), raw in sorted(lags.items()):
        lag = max(0, int(raw))
        if topic not in worst or lag > worst[topic][1]:
            worst[topic] = (partition, lag)
    return [
        Observation(
            kind="consumer_lag",
            value=lag,
            level=level_for(lag, th.lag_warn, th.lag_crit),
            warn=th.lag_warn,
            crit=th.lag_crit,
            labels={"topic": topic},
            cause=f"{topic} partition {partition} is {lag} events behind",
        )
        for topic, (partition, lag) in sorted(worst.items())
    ]


def freshness_observation(
    kind: str, labels: Mapping[str, str], what: str, age: float, th: HealthThresholds
) -> Observation:
    """Observation of an age (``inf`` = never) against the freshness thresholds."""
    warn, crit = th.freshness_warn_s, th.freshness_crit_s
    # alert.v1 values must be finite JSON numbers: "never" is reported as the crit threshold
    value = age if math.isfinite(age) else crit
    cause = f"no {what} yet" if math.isinf(age) else f"newest {what} is {age:.0f} s old"
    return Observation(
        kind=kind,
        value=value,
        level=level_for(age, warn, crit),
        warn=warn,
        crit=crit,
        labels=labels,
        cause=cause,
    )


class Monitor:
    """Owns the window accumulator and the alert manager of one worker."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        started_at: float,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """``state`` is a previous :meth:`state` (restored; raises ValueError when bad)."""
        self.config = config
        if state is None:
            self.windows = WindowAccumulator(config.window, started_at=started_at)
            self.alerts = AlertManager(config.alerts)
        else:
            self.windows = WindowAccumulator.from_dict(config.window, state["windows"])
            self.alerts = AlertManager.from_dict(config.alerts, state["alerts"])

    def state(self) -> dict[str, Any]:
        """JSON-able state (alerts and windows) to persist between evaluations."""
        return {"alerts": self.alerts.to_dict(), "windows": self.windows.to_dict()}

    def evaluate(
        self,
        now: float,
        *,
        lags: Mapping[tuple[str, int], int] | None = None,
        state_write_age: float | None = None,
        event_ages: Mapping[str, float] | None = None,
        event_lag_p99: Mapping[str, float] | None = None,
    ) -> MonitorResult:
        """Evaluate drift, lag and freshness at ``now``.

        ``event_ages`` defaults to the ages the window accumulator saw for the freshness
        topics; a topic with no event yet counts as silent since the monitor started (pass
        your own ages when events are counted elsewhere). ``lags`` /
        ``state_write_age`` left at ``None`` are not checked. ``event_lag_p99`` (topic → p99
        event-time lag) only adds status lines; Prometheus alerts on it.
        """
        th = self.config.health
        report = evaluate_drift(self.windows.windows(now), self.config.drift)
        if event_ages is None:
            seen = self.windows.newest_event_age(now)
            since_start = max(0.0, now - self.windows.started_at)
            event_ages = {t: seen.get(t, since_start) for t in self.config.freshness_topics}
        observations = drift_observations(report)
        if lags is not None:
            observations.extend(lag_observations(lags, th))
        for topic, age in sorted(event_ages.items()):
            observations.append(
                freshness_observation("freshness", {"topic": topic}, f"{topic} event", age, th)
            )
        if state_write_age is not None:
            observations.append(
                freshness_observation("state_freshness", {}, "state write", state_write_age, th)
            )
        events = self.alerts.evaluate(now, observations)
        firing = self.alerts.firing()
        health = evaluate_health(
            th,
            lags=lags,
            event_ages=event_ages,
            state_write_age=state_write_age,
            event_lag_p99=event_lag_p99,
            drift=report,
            firing=firing,
        )
        return MonitorResult(
            drift=report,
            alerts=tuple(events),
            health=health,
            event_ages=dict(event_ages),
            firing_counts=self.alerts.firing_counts(),
        )
