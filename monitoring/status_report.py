"""``streamrec status`` as data: measurements and heartbeat reports → lines, JSON, exit code. Pure.

Inputs are gathered by :mod:`streamrec.commands.status` (Kafka offsets measured live, Redis
freshness, the heartbeats of the live workers and of ``streamrec monitor`` with their last
health reports). Each line is OK / WARN / CRIT (:mod:`monitoring.health`); the exit code is the
worst level (0 OK, 1 WARN, 2 CRIT).

Also holds the (de)serialisation of a health report inside a heartbeat document
(:func:`report_doc`), written by the worker and the monitor each evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from monitoring.alerting import OpenAlert
from monitoring.coverage import coverage_lines
from monitoring.health import HealthReport, HealthThresholds, StatusLine, evaluate_health
from monitoring.levels import Level
from monitoring.monitor_io import FreshnessReading, OffsetSample
from monitoring.slo import BudgetReading, budget_text
from schemas.controls import KillSwitch

#: Metrics ``streamrec status`` measures itself; copies in heartbeat reports are not shown.
LIVE_METRICS = frozenset(
    {"consumer_lag", "newest_event_age_s", "state_write_age_s", "event_lag_p99_s", "alert"}
)


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    """A duration for people: 45 s, 12 min, 5 h, 3 d, 27 y."""
    s = max(0.0, seconds)
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172_800)):
        if s < up_to:
            return f"{s / size:.0f} {unit}"
    if s < 730 * 86400:
        return f"{s / 86400:.0f} d"
    return f"{s / (365.25 * 86400):.1f} y"


def line_doc(line: StatusLine) -> dict[str, Any]:
    return {
        "level": line.level.name,
        "subject": line.subject,
        "metric": line.metric,
        "value": _num(line.value),
        "detail": line.detail,
    }


def report_doc(health: HealthReport, firing: Sequence[OpenAlert]) -> dict[str, Any]:
    """JSON-able form of a process's last health report and its firing alerts."""
    return {
        "level": health.level.name,
        "lines": [line_doc(line) for line in health.lines if line.metric != "alert"],
        "alerts": [
            {
                "alert_id": a.alert_id,
                "kind": a.kind,
                "labels": dict(a.labels),
                "severity": a.severity.name,
                "value": _num(a.value),
                "threshold": a.threshold,
                "cause": a.cause,
                "first_seen": a.first_seen,
            }
            for a in firing
            if a.phase == "firing"
        ],
    }


def _level(name: object) -> Level:
    try:
        return Level[str(name)]
    except KeyError as exc:
        raise ValueError(f"bad level {name!r} in a health report") from exc


def _line_from(doc: Mapping[str, Any], subject_suffix: str = "") -> StatusLine:
    value = doc.get("value")
    return StatusLine(
        subject=str(doc["subject"]) + subject_suffix,
        metric=str(doc["metric"]),
        value=None if value is None else float(value),
        level=_level(doc["level"]),
        detail=str(doc.get("detail", "")),
    )


@dataclass(frozen=True, slots=True)
class StatusInputs:
    """Everything ``streamrec status`` measured."""

    now: float
    group: str
    offsets: OffsetSample
    """First sample: lag (end − committed) and end offsets."""
    later_ends: Mapping[tuple[str, int], int] | None
    """End offsets ``rate_window_s`` later (None: no rate sample)."""
    rate_window_s: float
    freshness: FreshnessReading
    workers: Sequence[Mapping[str, Any]]
    """Heartbeat documents of live workers."""
    monitors: Sequence[Mapping[str, Any]]
    """Heartbeat documents of live ``streamrec monitor`` processes."""
    freshness_topics: Sequence[str]
    kill_switches: Sequence[KillSwitch] = ()
    """Kill switches that are on (issue 19): one WARN line each."""
    slo_budget: BudgetReading | None = None
    """Remaining SLO error budgets read from Prometheus (None: not asked, no lines)."""


@dataclass(frozen=True, slots=True)
class Status:
    report: HealthReport
    doc: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    def render(self) -> str:
        return self.report.render()


def _rates(inputs: StatusInputs) -> dict[str, float]:
    if inputs.later_ends is None or inputs.rate_window_s <= 0:
        return {}
    rates: dict[str, float] = {}
    for key, end in inputs.later_ends.items():
        before = inputs.offsets.ends.get(key, end)
        rates[key[0]] = rates.get(key[0], 0.0) + max(0, end - before) / inputs.rate_window_s
    return rates


def _process_lines(role: str, docs: Sequence[Mapping[str, Any]]) -> list[StatusLine]:
    if docs:
        names = ", ".join(str(d.get("instance", "?")) for d in docs)
        return [StatusLine(role, "alive", len(docs), Level.OK, names)]
    if role == "workers":
        detail = "no worker heartbeat: nothing is processing the topics"
    else:
        detail = "`streamrec monitor` is not running: lag/freshness/CTR alerts are not emitted"
    return [StatusLine(role, "alive", 0, Level.WARN, detail)]


def _reported_lines(
    docs: Sequence[Mapping[str, Any]], metrics: set[str] | None
) -> list[StatusLine]:
    out: list[StatusLine] = []
    for doc in docs:
        report = doc.get("report") or {}
        suffix = f"@{doc.get('instance', '?')}" if len(docs) > 1 else ""
        for raw in report.get("lines", []):
            if raw.get("metric") in LIVE_METRICS:
                continue
            if (
                metrics is not None
                and raw.get("metric") not in metrics
                and not str(raw.get("subject", "")).startswith("drift/")
            ):
                continue
            out.append(_line_from(raw, suffix))
    return out


def _alerts(docs: Sequence[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for raw in (doc.get("report") or {}).get("alerts", []):
            alert = {**raw, "source": f"{doc.get('role', '?')}:{doc.get('instance', '?')}"}
            known = merged.get(raw["alert_id"])
            if known is None or _level(raw["severity"]) > _level(known["severity"]):
                merged[raw["alert_id"]] = alert
    return [merged[k] for k in sorted(merged)]


#: What a freshness line says about a topic whose events are old but processed (see
#: :func:`_historical_topics`).
HISTORICAL_HINT = "historical data? freshness is measured against the wall clock"


def _waiting(lags: Mapping[tuple[str, int], int]) -> dict[str, int]:
    """Messages not yet processed per topic (sum over its partitions)."""
    out: dict[str, int] = {}
    for (topic, _), lag in lags.items():
        out[topic] = out.get(topic, 0) + max(0, int(lag))
    return out


def _historical_topics(
    th: HealthThresholds, inputs: StatusInputs, waiting: Mapping[str, int]
) -> frozenset[str]:
    """Freshness topics that look like a replayed historical log rather than an outage.

    The newest processed event is at least ``freshness_warn_s`` behind the wall clock, yet
    nothing waits (consumer lag 0) and a worker wrote state at least ``freshness_warn_s``
    *after* that event's time: the worker is caught up and was processing events that were
    already old when it processed them. Producers that stopped leave the last state write
    close to the newest event time, so they are not reported as historical.
    """
    last_write = inputs.freshness.last_write
    if last_write is None:
        return frozenset()
    out = set()
    for topic in inputs.freshness_topics:
        newest = inputs.freshness.newest_by_topic.get(topic)
        if newest is None or topic not in waiting or waiting[topic] > 0:
            continue
        if (
            inputs.now - newest >= th.freshness_warn_s
            and last_write - newest >= th.freshness_warn_s
        ):
            out.add(topic)
    return frozenset(out)


def _explain_freshness(
    line: StatusLine,
    inputs: StatusInputs,
    waiting: Mapping[str, int],
    historical: frozenset[str],
) -> StatusLine:
    """A stale ``newest_event_age_s`` line says why: newest event time vs wall clock, lag."""
    newest = inputs.freshness.newest_by_topic.get(line.subject)
    if line.metric != "newest_event_age_s" or line.level is Level.OK or newest is None:
        return line
    behind = _span(inputs.now - newest)
    if line.subject in historical:
        detail = (
            f"newest event {_iso(newest)} vs wall clock {_iso(inputs.now)} ({behind} behind), "
            f"consumer lag 0: {HISTORICAL_HINT}"
        )
    elif waiting.get(line.subject, 0) > 0:
        detail = (
            f"newest processed event {_iso(newest)} ({behind} ago); "
            f"{waiting[line.subject]} messages wait: worker behind or stuck"
        )
    elif line.subject in waiting:
        detail = (
            f"no new event since {_iso(newest)} ({behind} ago), consumer lag 0: "
            "producers stopped? (`streamrec monitor` reports silent_for_s)"
        )
    else:
        detail = f"newest processed event {_iso(newest)} ({behind} ago)"
    return replace(line, detail=detail)


def budget_lines(reading: BudgetReading) -> list[StatusLine]:
    """Lines of the remaining SLO error budgets, or one line saying why they are unknown.

    A spent budget (≤ 0 left) is WARN; an unreachable Prometheus or one without the SLO
    rules' series is WARN with the reason; no Prometheus configured is OK, said plainly.
    """
    if reading.prometheus is None:
        detail = "unknown: no Prometheus configured (set STREAMREC_PROMETHEUS_URL)"
        return [StatusLine("slo", "error_budget", None, Level.OK, detail)]
    if reading.error is not None:
        detail = f"unknown: Prometheus at {reading.prometheus} did not answer: {reading.error}"
        return [StatusLine("slo", "error_budget", None, Level.WARN, detail)]
    if not reading.rows:
        detail = (
            f"unknown: Prometheus at {reading.prometheus} has no SLO budget series "
            "(SLO rules not loaded, or nothing scraped yet)"
        )
        return [StatusLine("slo", "error_budget", None, Level.WARN, detail)]
    return [
        StatusLine(
            "slo/" + row.slo + (f"/{row.surface}" if row.surface else ""),
            "error_budget_left",
            row.remaining,
            Level.WARN if row.remaining <= 0 else Level.OK,
            budget_text(row),
        )
        for row in reading.rows
    ]


def budget_doc(reading: BudgetReading | None) -> dict[str, Any] | None:
    """JSON form of the budgets (None when they were not asked for)."""
    if reading is None:
        return None
    return {
        "prometheus": reading.prometheus,
        "error": reading.error,
        "budgets": [
            {
                "slo": r.slo,
                "surface": r.surface,
                "remaining": _num(r.remaining),
                "objective": r.objective,
            }
            for r in reading.rows
        ],
    }


def kill_switch_line(switch: KillSwitch, now: float) -> StatusLine:
    """WARN while a kill switch is on: answers in its scope come from the safe baseline."""
    scope = f"{switch.tenant or '*'}/{switch.surface or '*'}"
    detail = (
        f"ON for {_span(max(0.0, now - switch.since))} by {switch.who}: {switch.reason} "
        "(answers come from the baseline; `streamrec admin kill-switch off` ends it)"
    )
    return StatusLine(f"kill_switch/{scope}", "on", 1.0, Level.WARN, detail)


def build_status(th: HealthThresholds, inputs: StatusInputs) -> Status:
    """Lines, JSON document and exit code of ``streamrec status``."""
    now = inputs.now
    lags = inputs.offsets.lags
    ages = inputs.freshness.event_ages(now, inputs.freshness_topics)
    state_age = inputs.freshness.state_write_age(now)
    base = evaluate_health(th, lags=lags, event_ages=ages, state_write_age=state_age)
    waiting = _waiting(lags)
    historical = _historical_topics(th, inputs, waiting)
    lines = [_explain_freshness(line, inputs, waiting, historical) for line in base.lines]
    for topic in inputs.offsets.missing_topics:
        lines.append(
            StatusLine(topic, "topic", None, Level.CRIT, "missing: run 'streamrec topics create'")
        )
    rates = _rates(inputs)
    for topic in sorted(rates):
        lines.append(
            StatusLine(
                topic,
                "events_per_s",
                rates[topic],
                Level.OK,
                f"produced, over {inputs.rate_window_s:g} s",
            )
        )
    lines += _process_lines("workers", inputs.workers)
    lines += _process_lines("monitor", inputs.monitors)
    # the monitor's re-tune decision line (monitoring.retune; 'decision' is its metric)
    lines += _reported_lines(inputs.monitors, {"silent_for_s", "decision"})
    # live catalog coverage / long-tail share of `streamrec monitor` (monitoring.coverage)
    lines += coverage_lines(inputs.monitors)
    lines += _reported_lines(inputs.workers, None)
    alerts = _alerts([*inputs.monitors, *inputs.workers], now)
    for a in alerts:
        since = max(0.0, now - float(a["first_seen"]))
        detail = f"firing {since:.0f} s (threshold {float(a['threshold']):g}): {a['cause']}"
        if a.get("kind") == "freshness" and (a.get("labels") or {}).get("topic") in historical:
            detail += f"; {HISTORICAL_HINT}"
        lines.append(
            StatusLine(a["alert_id"], "alert", a.get("value"), _level(a["severity"]), detail)
        )
    if not inputs.workers and inputs.freshness.last_write is None:
        lines.append(
            StatusLine(
                "state",
                "never_written",
                None,
                Level.WARN,
                "no worker has ever processed a batch for this key prefix",
            )
        )
    if inputs.slo_budget is not None:
        lines += budget_lines(inputs.slo_budget)
    lines += [kill_switch_line(switch, now) for switch in inputs.kill_switches]
    report = HealthReport(tuple(lines))

    silence: dict[str, float] = {}
    for line in _reported_lines(inputs.monitors[:1], {"silent_for_s"}):
        if line.metric == "silent_for_s" and line.value is not None:
            silence[line.subject] = line.value
    topics: dict[str, Any] = {}
    for (topic, partition), lag in sorted(lags.items()):
        entry = topics.setdefault(topic, {"lag": 0, "lag_max": 0, "partitions": {}})
        entry["lag"] += lag
        entry["lag_max"] = max(entry["lag_max"], lag)
        entry["partitions"][str(partition)] = lag
    for topic, entry in topics.items():
        entry["events_per_s"] = rates.get(topic)
        entry["newest_event_age_s"] = _num(ages.get(topic))
        newest = inputs.freshness.newest_by_topic.get(topic)
        entry["newest_event_at"] = None if newest is None else _iso(newest)
        entry["historical"] = topic in historical
        entry["silent_for_s"] = silence.get(topic)

    def procs(docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "instance": d.get("instance"),
                "host": d.get("host"),
                "pid": d.get("pid"),
                "heartbeat_age_s": max(0.0, now - float(d.get("ts", now))),
            }
            for d in docs
        ]

    doc: dict[str, Any] = {
        "overall": report.level.name,
        "exit_code": report.exit_code,
        "generated_at": _iso(now),
        "group": inputs.group,
        "topics": topics,
        "missing_topics": list(inputs.offsets.missing_topics),
        "state": {"write_age_s": _num(state_age)},
        "workers": procs(inputs.workers),
        "monitor": procs(inputs.monitors),
        "drift": [line_doc(line) for line in lines if line.subject.startswith("drift/")],
        "alerts": alerts,
        "kill_switches": [s.model_dump() for s in inputs.kill_switches],
        "slo": budget_doc(inputs.slo_budget),
        # the re-tune decision of `streamrec monitor` (null while no monitor runs)
        "retune": next((d["retune"] for d in inputs.monitors if d.get("retune")), None),
        # catalog coverage / long-tail share of `streamrec monitor` (null while none runs)
        "coverage": next((d["coverage"] for d in inputs.monitors if d.get("coverage")), None),
        "lines": [line_doc(line) for line in lines],
    }
    return Status(report, doc)
