"""The monitor of ``streamrec monitor``: lag, freshness, silence and CTR → alerts. Pure.

It watches the worker group *from outside*, so a stuck, crashed or absent worker still shows
growing lag and stale state. Inputs (measured by :mod:`monitoring.lag_monitor_service`):

* consumer lag per (topic, partition) and end offsets (Kafka, the group's committed offsets);
* the newest processed event time per topic and the newest state write (Redis);
* the exposure-join counters ``surface|variant|imp`` / ``|clk`` (Redis hash, cluster-wide).

Alert ownership — every alert kind has exactly one emitter, so nothing is emitted twice:

=====================  ===================  ==================================================
kind                   emitted by           why there
=====================  ===================  ==================================================
``consumer_lag``       ``streamrec monitor``  must keep growing when the worker is stuck/dead
``freshness``          ``streamrec monitor``  newest processed event per topic (Redis)
``topic_silence``      ``streamrec monitor``  end offsets not moving: producers stopped
``state_freshness``    ``streamrec monitor``  newest state write (Redis ``meta.last_write``)
``drift_ctr``          ``streamrec monitor``  CTR per surface/variant from the cluster-wide
                                             join counters (the join happens in Redis)
``retune``             ``streamrec monitor``  the re-tune decision (:mod:`monitoring.retune`):
                                             its sustained CTR drop and the plan signals
                                             out in the workers' heartbeat reports
``drift_volume``,      worker               need the events themselves (types, items, users);
``drift_event_mix``,                        each worker sees the users of its partitions
``drift_items``,
``drift_coldstart``,
``deadletter_rate``
=====================  ===================  ==================================================

``freshness`` vs ``topic_silence`` tells the two stale-data causes apart: both fire when the
producers stop; only ``freshness`` fires when messages keep arriving but nothing processes
them (then ``consumer_lag`` follows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from monitoring.alerting import AlertManager, Observation
from monitoring.drift import DriftReport, evaluate_drift
from monitoring.health import HealthReport, StatusLine, evaluate_health
from monitoring.levels import level_for
from monitoring.monitor import (
    MonitorConfig,
    drift_observations,
    freshness_observation,
    lag_observations,
)
from monitoring.monitor_io import FreshnessReading, OffsetSample
from monitoring.retune import CtrSustain, RetuneDecision, SignalOut, decide
from monitoring.windows import PAIR_SEP, WindowAccumulator
from schemas.events import Alert

_STATE_VERSION = 1
#: Pseudo-topic the impression counts are filed under in the CTR window (never reported).
_CTR_TOPIC = "_ctr"


class SilenceTracker:
    """Seconds since the end offsets of each topic last moved."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.totals: dict[str, int] = {}
        self.moved_at: dict[str, float] = {}

    def update(self, now: float, end_totals: Mapping[str, int]) -> dict[str, float]:
        """Record the end-offset sums at ``now``; return seconds of silence per topic.

        A topic seen for the first time counts as moved at the tracker's start (a fresh
        monitor cannot know how long it was quiet before).
        """
        for topic, total in end_totals.items():
            if topic not in self.totals:
                self.moved_at[topic] = self.started_at
            elif total != self.totals[topic]:  # grew, or the topic was re-created
                self.moved_at[topic] = now
            self.totals[topic] = total
        return {t: max(0.0, now - self.moved_at[t]) for t in end_totals}

    def to_dict(self) -> dict[str, Any]:
        return {"totals": self.totals, "moved_at": self.moved_at}

    @classmethod
    def from_dict(cls, started_at: float, data: Mapping[str, Any]) -> SilenceTracker:
        tracker = cls(started_at)
        tracker.totals = {str(k): int(v) for k, v in data["totals"].items()}
        tracker.moved_at = {str(k): float(v) for k, v in data["moved_at"].items()}
        return tracker


@dataclass(frozen=True, slots=True)
class CtrDelta:
    """Impressions and clicks per ``surface|variant`` since the previous reading."""

    impressions: dict[str, int]
    clicks: dict[str, int]


class CtrCounters:
    """Turns the cumulative join counters into per-interval deltas (tolerates resets)."""

    def __init__(self) -> None:
        self.last: dict[str, int] | None = None

    @staticmethod
    def _pairs(counters: Mapping[str, int], metric: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, value in counters.items():
            pair, sep, what = name.rpartition(PAIR_SEP)
            if sep and what == metric and PAIR_SEP in pair:
                out[pair] = int(value)
        return out

    def update(self, counters: Mapping[str, int]) -> CtrDelta:
        """Deltas since the last call; the first call only sets the baseline.

        A counter that went down (key deleted, Redis flushed) restarts from its new value.
        """
        last, self.last = self.last, dict(counters)
        if last is None:
            return CtrDelta({}, {})

        def delta(metric: str) -> dict[str, int]:
            now_pairs, before = self._pairs(counters, metric), self._pairs(last, metric)
            out = {}
            for pair, value in now_pairs.items():
                change = value - before.get(pair, 0)
                if change < 0:
                    change = value
                if change > 0:
                    out[pair] = change
            return out

        return CtrDelta(delta("imp"), delta("clk"))

    def to_dict(self) -> dict[str, Any]:
        return {"last": self.last}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CtrCounters:
        counters = cls()
        raw = data.get("last")
        counters.last = None if raw is None else {str(k): int(v) for k, v in raw.items()}
        return counters


@dataclass(frozen=True, slots=True)
class LagMonitorResult:
    alerts: tuple[Alert, ...]
    health: HealthReport
    drift: DriftReport
    """CTR signals only."""
    silence: Mapping[str, float]
    event_ages: Mapping[str, float]
    """Per freshness topic; ``inf`` when no event was ever processed."""
    firing_counts: Mapping[tuple[str, str], int]
    retune: RetuneDecision | None = None
    """The re-tune decision (None when the CTR counters could not be read)."""
    ctr_drop_s: Mapping[str, float] = field(default_factory=dict)
    """surface|variant → seconds its plans' CTR drop has been out without a break."""


class LagMonitor:
    """Alert manager + CTR window + silence tracker of the independent monitor process."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        started_at: float,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """``state`` is a previous :meth:`state` (raises ValueError when bad)."""
        # only (surface, variant) counters go in: the seen-sets stay at their minimum
        self.config = replace(config, window=replace(config.window, seen_capacity=2))
        self.started_at = started_at
        if state is None:
            self.windows = WindowAccumulator(self.config.window, started_at=started_at)
            self.alerts = AlertManager(self.config.alerts)
            self.silence = SilenceTracker(started_at)
            self.ctr = CtrCounters()
            self.retune = CtrSustain(self.config.retune)
            return
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported lag monitor state version {state.get('version')!r}")
        try:
            self.windows = WindowAccumulator.from_dict(self.config.window, state["windows"])
            self.alerts = AlertManager.from_dict(self.config.alerts, state["alerts"])
            self.silence = SilenceTracker.from_dict(started_at, state["silence"])
            self.ctr = CtrCounters.from_dict(state["ctr"])
            raw = state.get("retune")  # absent in states saved before the re-tune decision
            self.retune = (
                CtrSustain(self.config.retune)
                if raw is None
                else CtrSustain.from_dict(self.config.retune, raw)
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad lag monitor state: {exc!r}") from exc

    def state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "alerts": self.alerts.to_dict(),
            "windows": self.windows.to_dict(),
            "silence": self.silence.to_dict(),
            "ctr": self.ctr.to_dict(),
            "retune": self.retune.to_dict(),
        }

    def _feed_ctr(self, now: float, counters: Mapping[str, int]) -> None:
        delta = self.ctr.update(counters)
        if delta.impressions:
            pairs = sorted(delta.impressions)
            surfaces = [p.partition(PAIR_SEP)[0] for p in pairs]
            variants = [p.partition(PAIR_SEP)[2] for p in pairs]
            self.windows.add_exposures(
                now,
                [now] * len(pairs),
                surfaces,
                variants,
                [delta.impressions[p] for p in pairs],
                topic=_CTR_TOPIC,
            )
        if delta.clicks:
            rows = [p for p in sorted(delta.clicks) for _ in range(delta.clicks[p])]
            self.windows.add_clicks(
                now,
                [now] * len(rows),
                [p.partition(PAIR_SEP)[0] for p in rows],
                [p.partition(PAIR_SEP)[2] for p in rows],
            )

    def evaluate(
        self,
        now: float,
        *,
        offsets: OffsetSample | None,
        freshness: FreshnessReading | None,
        ctr_counters: Mapping[str, int] | None,
        worker_signals: Sequence[SignalOut] = (),
    ) -> LagMonitorResult:
        """One evaluation. An input left at ``None`` (its source was unreachable) is skipped:
        its alerts keep their state (and resolve as stale after ``alert_stale_s``).

        ``worker_signals``: plan signals out in the workers' reports (read with the CTR
        counters from Redis); with the CTR drop they make the re-tune decision."""
        th = self.config.health
        topics = self.config.freshness_topics
        observations: list[Observation] = []
        lags = offsets.lags if offsets is not None else None
        if lags is not None:
            observations.extend(lag_observations(lags, th))

        silence: dict[str, float] = {}
        if offsets is not None:
            totals = offsets.end_totals()
            silence = self.silence.update(now, {t: totals[t] for t in topics if t in totals})
            for topic, quiet in sorted(silence.items()):
                observations.append(
                    Observation(
                        kind="topic_silence",
                        value=quiet,
                        level=level_for(quiet, th.freshness_warn_s, th.freshness_crit_s),
                        warn=th.freshness_warn_s,
                        crit=th.freshness_crit_s,
                        labels={"topic": topic},
                        cause=f"no new {topic} message for {quiet:.0f} s (end offsets unchanged)",
                    )
                )

        waiting: dict[str, int] = {}
        for (topic, _), lag in (lags or {}).items():
            waiting[topic] = waiting.get(topic, 0) + lag
        event_ages: dict[str, float] = {}
        state_age: float | None = None
        if freshness is not None:
            event_ages = freshness.event_ages(now, topics)
            since_start = max(0.0, now - self.started_at)
            for topic, age in sorted(event_ages.items()):
                obs = freshness_observation(
                    "freshness",
                    {"topic": topic},
                    f"processed {topic} event",
                    min(age, since_start) if math.isinf(age) else age,
                    th,
                )
                if math.isinf(age):
                    obs = replace(obs, cause=f"no {topic} event processed yet")
                elif waiting.get(topic, 0) > 0:
                    obs = replace(
                        obs,
                        cause=obs.cause + f"; {waiting[topic]} messages wait "
                        "(worker stuck or behind)",
                    )
                observations.append(obs)
            state_age = freshness.state_write_age(now)
            obs = freshness_observation(
                "state_freshness",
                {},
                "state write",
                min(state_age, max(0.0, now - self.started_at)),
                th,
            )
            if math.isinf(state_age):
                obs = replace(obs, cause="no state write yet (no worker has processed a batch)")
            observations.append(obs)

        if ctr_counters is not None:
            self._feed_ctr(now, ctr_counters)
        full = evaluate_drift(self.windows.windows(now), self.config.drift)
        drift = replace(full, signals=(*full.of("ctr_rel_drop"), *full.of("ctr_drop")))
        retune: RetuneDecision | None = None
        sustained = self.retune.update(now, drift.of("ctr_drop"))
        if ctr_counters is not None:
            observations.extend(drift_observations(drift))
            out = [*worker_signals, *(SignalOut.of(s) for s in drift.plan_out)]
            retune = decide(out, sustained, sustain_s=self.config.retune.sustain_s)
            observations.append(retune.observation(drift.window_s))

        events = self.alerts.evaluate(now, observations)
        health = evaluate_health(
            th,
            lags=lags,
            event_ages=event_ages or None,
            state_write_age=state_age,
            drift=drift,
            firing=self.alerts.firing(),
        )
        silence_lines = tuple(
            StatusLine(
                topic,
                "silent_for_s",
                quiet,
                level_for(quiet, th.freshness_warn_s, th.freshness_crit_s),
                "seconds since the end offsets last moved",
            )
            for topic, quiet in sorted(silence.items())
        )
        retune_lines = () if retune is None else (retune.status_line(),)
        health = HealthReport(health.lines + silence_lines + retune_lines)
        return LagMonitorResult(
            alerts=tuple(events),
            health=health,
            drift=drift,
            silence=silence,
            event_ages=event_ages,
            firing_counts=self.alerts.firing_counts(),
            retune=retune,
            ctr_drop_s=self.retune.durations(now),
        )
