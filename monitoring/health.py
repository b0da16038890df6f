"""Health as data: lag, freshness, drift and open alerts → status lines and an exit code. Pure.

``streamrec status`` renders :class:`HealthReport` (one line per topic / signal / alert:
``LEVEL subject metric value detail``) and exits with :attr:`HealthReport.exit_code`
(0 OK, 1 WARN, 2 CRIT). Lines reflect the values *now*; firing alerts (which carry
hysteresis and a minimum duration) get lines of their own, so a value that just dipped
below its threshold still shows the alert until it has really cleared.

Ages are seconds; ``math.inf`` means "never" (no event processed, no state written) and is
CRIT. An input left at ``None`` is not checked and produces no line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.settings import Settings, setting_attr, settings_values
from monitoring.alerting import OpenAlert
from monitoring.drift import DriftReport
from monitoring.levels import Level, level_for


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """WARN / CRIT thresholds of the non-drift checks: the settings of the same names."""

    lag_warn: float = setting_attr("lag_warn")
    lag_crit: float = setting_attr("lag_crit")
    freshness_warn_s: float = setting_attr("freshness_warn_s")
    freshness_crit_s: float = setting_attr("freshness_crit_s")
    event_lag_p99_warn_s: float = setting_attr("event_lag_p99_warn_s")
    event_lag_p99_crit_s: float = setting_attr("event_lag_p99_crit_s")

    def __post_init__(self) -> None:
        for name in ("lag", "freshness", "event_lag_p99"):
            warn = getattr(self, f"{name}_warn" if name == "lag" else f"{name}_warn_s")
            crit = getattr(self, f"{name}_crit" if name == "lag" else f"{name}_crit_s")
            if not 0 < warn < crit:
                raise ValueError(f"{name}: need 0 < warn < crit, got warn={warn} crit={crit}")

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthThresholds:
        return cls(**settings_values(cls, settings))


@dataclass(frozen=True, slots=True)
class StatusLine:
    """One line of ``streamrec status``."""

    subject: str
    """Topic, component (``state``, ``server``) or alert id."""
    metric: str
    value: float | None
    level: Level
    detail: str = ""

    def render(self) -> str:
        return f"{self.level.name:<4}  {self.subject:<28} {self.metric:<20} " + (
            f"{_fmt(self.value):>10}  {self.detail}".rstrip()
        )


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


@dataclass(frozen=True, slots=True)
class HealthReport:
    """All status lines; the worst level is the exit code."""

    lines: tuple[StatusLine, ...]

    @property
    def level(self) -> Level:
        return max((line.level for line in self.lines), default=Level.OK)

    @property
    def exit_code(self) -> int:
        return int(self.level)

    def render(self) -> str:
        body = [line.render() for line in self.lines]
        return "\n".join([*body, f"overall: {self.level.name}"])


def _lag_lines(lags: Mapping[tuple[str, int], int], th: HealthThresholds) -> list[StatusLine]:
    by_topic: dict[str, dict[int, int]] = {}
    for (topic, partition), lag in lags.items():
        # end and committed offsets are read separately; a commit between the two reads
        # can make the difference negative for a moment
        by_topic.setdefault(topic, {})[partition] = max(0, int(lag))
    lines = []
    for topic in sorted(by_topic):
        parts = by_topic[topic]
        worst = max(sorted(parts), key=lambda p: parts[p])
        value = parts[worst]
        detail = (
            f"max at partition {worst}; total {sum(parts.values())} over {len(parts)} partitions"
        )
        lines.append(
            StatusLine(
                topic, "consumer_lag", value, level_for(value, th.lag_warn, th.lag_crit), detail
            )
        )
    return lines


def _age_line(subject: str, metric: str, age: float, th: HealthThresholds) -> StatusLine:
    if math.isnan(age) or age < 0:
        raise ValueError(f"{subject} {metric}: age must be >= 0 or inf, got {age}")
    level = level_for(age, th.freshness_warn_s, th.freshness_crit_s)
    detail = "nothing seen yet" if math.isinf(age) else f"seconds (warn {th.freshness_warn_s:g})"
    return StatusLine(subject, metric, age, level, detail)


def evaluate_health(
    thresholds: HealthThresholds,
    *,
    lags: Mapping[tuple[str, int], int] | None = None,
    event_ages: Mapping[str, float] | None = None,
    state_write_age: float | None = None,
    serving_state_age: float | None = None,
    event_lag_p99: Mapping[str, float] | None = None,
    drift: DriftReport | None = None,
    firing: Sequence[OpenAlert] = (),
) -> HealthReport:
    """Build the status report.

    ``lags``: (topic, partition) → end offset − committed offset. ``event_ages``: topic →
    age of the newest processed event. ``event_lag_p99``: topic → p99 event-time lag.
    """
    th = thresholds
    lines: list[StatusLine] = []
    if lags is not None:
        lines.extend(_lag_lines(lags, th))
    for topic in sorted(event_ages or {}):
        lines.append(_age_line(topic, "newest_event_age_s", (event_ages or {})[topic], th))
    for topic in sorted(event_lag_p99 or {}):
        value = (event_lag_p99 or {})[topic]
        lines.append(
            StatusLine(
                topic,
                "event_lag_p99_s",
                value,
                level_for(value, th.event_lag_p99_warn_s, th.event_lag_p99_crit_s),
            )
        )
    if state_write_age is not None:
        lines.append(_age_line("state", "state_write_age_s", state_write_age, th))
    if serving_state_age is not None:
        lines.append(_age_line("server", "serving_state_age_s", serving_state_age, th))
    if drift is not None:
        for signal in drift.signals:
            lines.append(
                StatusLine(
                    f"drift/{signal.scope}",
                    signal.signal,
                    signal.value if signal.evaluable else None,
                    signal.level,
                    signal.cause,
                )
            )
    for alert in firing:
        if alert.phase != "firing":
            continue
        lines.append(
            StatusLine(
                alert.alert_id,
                "alert",
                alert.value,
                alert.severity,
                f"firing (threshold {alert.threshold:g}): {alert.cause}",
            )
        )
    return HealthReport(tuple(lines))
