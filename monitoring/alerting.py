"""Alert state machine: observations in, ``alert.v1`` events out — one per episode. Pure.

Per alert id (kind + labels) the life of an episode is::

    (none) ──level ≥ WARN──► pending ──held min_duration──► firing ──cleared min_duration──► (none)
       ▲                        │ level OK                    │ CRIT held min_duration
       └────────────────────────┘                             └──► firing (severity crit)

* **Minimum duration** — a condition must be observed at WARN or worse continuously for
  ``min_duration_s`` before it fires (like Prometheus ``for:``); a dip back to OK resets it.
* **Hysteresis** — a firing alert resolves only once the value is past
  ``warn × clear_ratio`` (``warn / clear_ratio`` for low-side thresholds) and stays there for
  ``min_duration_s``. Between that point and the threshold nothing changes, so a value
  hovering at the threshold cannot flap.
* **Escalation** — WARN → CRIT emits one more ``firing`` event (severity crit) after CRIT held
  ``min_duration_s``; severity never de-escalates inside an episode (no event storm when a
  value oscillates around the crit threshold).
* **Staleness** — observations with ``evaluable=False`` carry no information and leave the
  state alone. A firing alert not observed for ``stale_s`` resolves ("no longer observed");
  a pending one is dropped.

:meth:`AlertManager.to_dict` / :meth:`AlertManager.from_dict` persist the state so a
restarted worker neither re-fires open alerts nor forgets to resolve them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any, Literal

from core.settings import Settings, setting_attr, settings_values
from monitoring.levels import Direction, Level, is_cleared
from schemas.events import MAX_ID_LEN, MAX_STR_LEN, Alert, Severity

_STATE_VERSION = 1
Phase = Literal["pending", "firing"]


def make_alert_id(kind: str, labels: Mapping[str, str]) -> str:
    """Stable id of a condition: ``kind`` or ``kind:k=v,k2=v2`` (hashed when too long)."""
    if not kind:
        raise ValueError("alert kind must not be empty")
    if not labels:
        alert_id = kind
    else:
        alert_id = kind + ":" + ",".join(f"{k}={labels[k]}" for k in sorted(labels))
    if len(alert_id) <= MAX_ID_LEN:
        return alert_id
    digest = blake2b(alert_id.encode(), digest_size=8).hexdigest()
    return f"{kind[: MAX_ID_LEN - len(digest) - 1]}:{digest}"


def _short(text: str) -> str:
    return text if len(text) <= MAX_STR_LEN else text[: MAX_STR_LEN - 1] + "…"


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Timing and hysteresis of every alert: the ``alert_*`` settings."""

    min_duration_s: float = setting_attr("alert_min_duration_s")
    clear_ratio: float = setting_attr("alert_clear_ratio")
    stale_s: float = setting_attr("alert_stale_s")

    def __post_init__(self) -> None:
        if self.min_duration_s < 0:
            raise ValueError("min_duration_s must be >= 0")
        if not 0 < self.clear_ratio <= 1:
            raise ValueError("clear_ratio must be in (0, 1]")
        if self.stale_s <= 0:
            raise ValueError("stale_s must be > 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertPolicy:
        return cls(**settings_values(cls, settings))


@dataclass(frozen=True, slots=True)
class Observation:
    """The value of one monitored condition at one evaluation."""

    kind: str
    value: float
    level: Level
    """Level the monitor assigns now (may include guards, e.g. significance)."""
    warn: float
    crit: float | None = None
    direction: Direction = "above"
    labels: Mapping[str, str] = field(default_factory=dict)
    window_s: float = 0.0
    cause: str = ""
    evaluable: bool = True

    @property
    def alert_id(self) -> str:
        return make_alert_id(self.kind, self.labels)


@dataclass(slots=True)
class OpenAlert:
    """State of one pending or firing alert (persisted by :meth:`AlertManager.to_dict`)."""

    alert_id: str
    kind: str
    labels: dict[str, str]
    phase: Phase
    severity: Level
    first_seen: float
    last_seen: float
    value: float
    warn: float
    crit: float | None
    direction: Direction
    window_s: float
    cause: str
    crit_since: float | None = None
    clear_since: float | None = None

    @property
    def threshold(self) -> float:
        if self.severity is Level.CRIT and self.crit is not None:
            return self.crit
        return self.warn

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.name
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenAlert:
        try:
            phase = data["phase"]
            direction = data["direction"]
            if phase not in ("pending", "firing") or direction not in ("above", "below"):
                raise ValueError(f"bad phase {phase!r} or direction {direction!r}")

            def opt(name: str) -> float | None:
                raw = data.get(name)
                return None if raw is None else float(raw)

            return cls(
                alert_id=str(data["alert_id"]),
                kind=str(data["kind"]),
                labels={str(k): str(v) for k, v in data["labels"].items()},
                phase=phase,
                severity=Level[data["severity"]],
                first_seen=float(data["first_seen"]),
                last_seen=float(data["last_seen"]),
                value=float(data["value"]),
                warn=float(data["warn"]),
                crit=opt("crit"),
                direction=direction,
                window_s=float(data["window_s"]),
                cause=str(data["cause"]),
                crit_since=opt("crit_since"),
                clear_since=opt("clear_since"),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"bad alert state: {exc!r}") from exc


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class AlertManager:
    """Turns a stream of :class:`Observation` into ``alert.v1`` events without storms."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self._open: dict[str, OpenAlert] = {}

    # --- evaluation ----------------------------------------------------------------------------
    def evaluate(self, now: float, observations: Iterable[Observation]) -> list[Alert]:
        """Advance every condition to ``now``; return the events to publish (in order)."""
        if not math.isfinite(now):
            raise ValueError("now must be finite")
        seen: dict[str, Observation] = {}
        for obs in observations:
            alert_id = obs.alert_id
            if alert_id in seen:
                raise ValueError(f"two observations for alert {alert_id!r} in one evaluation")
            seen[alert_id] = obs
        events: list[Alert] = []
        for alert_id, obs in seen.items():
            if obs.evaluable:
                events.extend(self._step(now, alert_id, obs))
        for alert_id in sorted(self._open):
            state = self._open[alert_id]
            observed = alert_id in seen and seen[alert_id].evaluable
            if observed or now - state.last_seen < self.policy.stale_s:
                continue
            del self._open[alert_id]
            if state.phase == "firing":
                state.cause = _short(
                    f"no longer observed for {now - state.last_seen:.0f} s; last: {state.cause}"
                )
                events.append(self._event(state, "resolved", now))
        return events

    def _step(self, now: float, alert_id: str, obs: Observation) -> list[Alert]:
        min_d = self.policy.min_duration_s
        state = self._open.get(alert_id)
        if state is None:
            if obs.level is Level.OK:
                return []
            state = OpenAlert(
                alert_id=alert_id,
                kind=obs.kind,
                labels={str(k): _short(str(v)) for k, v in obs.labels.items()},
                phase="pending",
                severity=Level.WARN,
                first_seen=now,
                last_seen=now,
                value=obs.value,
                warn=obs.warn,
                crit=obs.crit,
                direction=obs.direction,
                window_s=obs.window_s,
                cause=_short(obs.cause),
            )
            self._open[alert_id] = state
        state.last_seen = now
        state.value = obs.value
        state.warn, state.crit, state.direction = obs.warn, obs.crit, obs.direction
        state.window_s = obs.window_s
        if obs.level >= Level.WARN:
            state.cause = _short(obs.cause)
        # CRIT must hold min_duration too, before firing as crit or escalating to it
        if obs.level is Level.CRIT:
            state.crit_since = now if state.crit_since is None else state.crit_since
        else:
            state.crit_since = None
        crit_held = state.crit_since is not None and now - state.crit_since >= min_d

        if state.phase == "pending":
            if obs.level is Level.OK:
                del self._open[alert_id]
                return []
            if now - state.first_seen < min_d:
                return []
            state.phase = "firing"
            state.severity = Level.CRIT if crit_held else Level.WARN
            return [self._event(state, "firing", now)]

        events: list[Alert] = []
        if state.severity is Level.WARN and crit_held:
            state.severity = Level.CRIT
            events.append(self._event(state, "firing", now))
        if is_cleared(obs.value, obs.warn, self.policy.clear_ratio, obs.direction):
            state.clear_since = now if state.clear_since is None else state.clear_since
            if now - state.clear_since >= min_d:
                del self._open[alert_id]
                state.cause = _short(f"cleared: {obs.cause}" if obs.cause else "cleared")
                events.append(self._event(state, "resolved", now))
        else:
            state.clear_since = None
        return events

    def _event(self, state: OpenAlert, kind: Literal["firing", "resolved"], now: float) -> Alert:
        return Alert(
            alert_id=state.alert_id,
            kind=state.kind,
            state=kind,
            severity=Severity.CRIT if state.severity is Level.CRIT else Severity.WARN,
            value=state.value if math.isfinite(state.value) else 0.0,
            threshold=state.threshold,
            window_s=max(0.0, state.window_s),
            cause=state.cause or state.kind,
            labels=dict(state.labels),
            first_seen=_dt(state.first_seen),
            ts=_dt(now),
        )

    # --- queries -------------------------------------------------------------------------------
    def firing(self) -> list[OpenAlert]:
        """Alerts currently firing, by id."""
        return [s for _, s in sorted(self._open.items()) if s.phase == "firing"]

    def pending(self) -> list[OpenAlert]:
        return [s for _, s in sorted(self._open.items()) if s.phase == "pending"]

    def firing_counts(self) -> dict[tuple[str, str], int]:
        """(kind, severity) → number of firing alerts (for ``streamrec_alerts_firing``)."""
        counts: dict[tuple[str, str], int] = {}
        for state in self.firing():
            key = (state.kind, state.severity.name.lower())
            counts[key] = counts.get(key, 0) + 1
        return counts

    # --- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "alerts": {k: v.to_dict() for k, v in sorted(self._open.items())},
        }

    @classmethod
    def from_dict(cls, policy: AlertPolicy, data: Mapping[str, Any]) -> AlertManager:
        """Restore from :meth:`to_dict`; raises :class:`ValueError` on a bad state."""
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported alert state version {data.get('version')!r}")
        alerts = data.get("alerts")
        if not isinstance(alerts, Mapping):
            raise ValueError("alert state needs an 'alerts' mapping")
        manager = cls(policy)
        for alert_id, raw in alerts.items():
            if not isinstance(raw, Mapping):
                raise ValueError(f"bad alert state for {alert_id!r}")
            state = OpenAlert.from_dict(raw)
            if state.alert_id != alert_id:
                raise ValueError(f"alert state key {alert_id!r} != id {state.alert_id!r}")
            manager._open[alert_id] = state
        return manager
