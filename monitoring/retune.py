"""The re-tune decision: the plans' drift signals → "re-tune now" / "schedule" / "within bounds".

Pure (no clock, no I/O). Inputs are the plan signals of :mod:`monitoring.drift`
(:data:`~monitoring.drift.PLAN_SIGNALS`): the CTR drop per surface/variant that
``streamrec monitor`` evaluates, and the KL, volume and cold-start signals the workers report
in their heartbeats (:func:`signals_out_in_reports`). The rule (:func:`decide`):

* **re-tune now** — the plans' CTR drop is *sustained* (:class:`CtrSustain`): a drop starts
  when ``ctr_drop`` is out (≥ ``drift_plan_ctr_drop`` against the rolling reference,
  significant); the reference CTR of that moment is kept as the *baseline*, and the drop lasts
  while every later evaluation's current-window CTR (with ≥ ``drift_ctr_min_impressions``)
  stays ≥ ``drift_plan_ctr_drop`` below that baseline. Sustained once it lasted
  ``drift_plan_ctr_sustain_s``. Judging the later evaluations against the frozen baseline,
  not the rolling reference, matters: the rolling reference absorbs a lasting drop (a 20 %
  drop is no longer 15 % below a one-hour rolling reference after ~18 minutes). An
  evaluation with too few impressions, a CTR back within ``drift_plan_ctr_drop`` of the
  baseline, or a gap longer than ``drift_window_s`` between two evaluations ends the drop;
* **schedule** — two or more plan signals are out now (counted by signal, not by scope: cold
  start of users and of items is one signal, as is the volume of several topics);
* **within bounds** — otherwise (one signal out alone is noted in the reason).

Every decision carries its reason and the command to run (:data:`RETUNE_COMMAND`, on a fresh
export of the outcomes). ``streamrec monitor`` emits it as the ``retune`` alert kind (warn on
schedule, crit on re-tune now), as the ``streamrec_retune_*`` gauges and as the ``retune``
line of ``streamrec status``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.settings import Settings, setting_attr, settings_values
from monitoring.alerting import Observation
from monitoring.drift import PLAN_SIGNALS, DriftSignal
from monitoring.health import StatusLine
from monitoring.levels import Level

#: Alert kind (``alert.v1`` ``kind``) of the decision; one emitter: ``streamrec monitor``.
RETUNE_KIND = "retune"
#: Subject and metric of the decision's ``streamrec status`` line.
RETUNE_SUBJECT, RETUNE_METRIC = "retune", "decision"
#: What to run: tune on a recent export of the outcomes, its last D days held out.
RETUNE_COMMAND = "streamrec export outcomes PATH && streamrec eval tune PATH --holdout-days D"
_STATE_VERSION = 1


class Verdict(StrEnum):
    """The three outcomes; the value is the ``decision`` label of ``streamrec_retune_decision``."""

    WITHIN_BOUNDS = "within_bounds"
    SCHEDULE = "schedule"
    RETUNE_NOW = "retune_now"

    @property
    def label(self) -> str:
        """How people read it: "within bounds", "schedule", "re-tune now"."""
        return "re-tune now" if self is Verdict.RETUNE_NOW else self.value.replace("_", " ")

    @property
    def level(self) -> Level:
        """OK / WARN / CRIT (also the alert's value: 0 / 1 / 2)."""
        return {"within_bounds": Level.OK, "schedule": Level.WARN, "retune_now": Level.CRIT}[
            self.value
        ]


@dataclass(frozen=True, slots=True)
class RetuneConfig:
    """Sustain rule of the CTR drop: the ``drift_plan_ctr_sustain_s`` and window settings."""

    sustain_s: float = setting_attr("drift_plan_ctr_sustain_s")
    max_gap_s: float = setting_attr("drift_window_s")
    """A longer gap between two evaluations (monitor down) restarts the count."""

    def __post_init__(self) -> None:
        if not (self.sustain_s > 0 and self.max_gap_s > 0):
            raise ValueError("sustain_s and max_gap_s must be > 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetuneConfig:
        return cls(**settings_values(cls, settings))


@dataclass(frozen=True, slots=True)
class SignalOut:
    """One plan signal out of bounds, with the process that reported it."""

    signal: str
    scope: str
    cause: str
    source: str = ""

    @classmethod
    def of(cls, signal: DriftSignal, source: str = "") -> SignalOut:
        return cls(signal.signal, signal.scope, signal.cause, source)


@dataclass(frozen=True, slots=True)
class SustainedDrop:
    """A surface/variant whose plans' CTR drop has been out at every evaluation for a while."""

    scope: str
    seconds: float
    cause: str


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass(frozen=True, slots=True)
class RetuneDecision:
    """The decision, why, and what to run."""

    verdict: Verdict
    reason: str
    command: str
    """Empty when within bounds."""
    out: tuple[SignalOut, ...] = ()
    sustained: tuple[SustainedDrop, ...] = ()

    @property
    def level(self) -> Level:
        return self.verdict.level

    @property
    def signals_out(self) -> int:
        """Distinct plan signals out (the count the "schedule" rule compares with 2)."""
        return len({s.signal for s in self.out})

    @property
    def summary(self) -> str:
        text = f"{self.verdict.label}: {self.reason}"
        return f"{text}; run: {self.command}" if self.command else text

    def status_line(self) -> StatusLine:
        return StatusLine(
            RETUNE_SUBJECT, RETUNE_METRIC, float(self.level), self.level, self.summary
        )

    def observation(self, window_s: float) -> Observation:
        """The ``retune`` alert's observation: value 0 / 1 / 2, warn at 1, crit at 2."""
        return Observation(
            kind=RETUNE_KIND,
            value=float(self.level),
            level=self.level,
            warn=float(Level.WARN),
            crit=float(Level.CRIT),
            window_s=window_s,
            cause=self.summary,
        )

    def to_doc(self) -> dict[str, Any]:
        """JSON-able form (heartbeat of ``streamrec monitor``, ``streamrec status --json``)."""
        return {
            "decision": self.verdict.value,
            "label": self.verdict.label,
            "reason": self.reason,
            "command": self.command,
            "signals_out": [
                {"signal": s.signal, "scope": s.scope, "cause": s.cause, "source": s.source}
                for s in self.out
            ],
            "sustained": [
                {"scope": d.scope, "seconds": d.seconds, "cause": d.cause} for d in self.sustained
            ],
        }


def decide(
    out: Sequence[SignalOut], sustained: Sequence[SustainedDrop], *, sustain_s: float
) -> RetuneDecision:
    """The plans' rule: sustained CTR drop → re-tune now; ≥ 2 signals out → schedule."""
    ordered = tuple(sorted(out, key=lambda s: (s.signal, s.scope, s.source)))
    by_signal: dict[str, list[SignalOut]] = {}
    for s in ordered:
        by_signal.setdefault(s.signal, []).append(s)
    listed = "; ".join(
        f"{name} ({', '.join(sorted({s.scope for s in group}))}): {group[0].cause}"
        for name, group in sorted(by_signal.items())
    )
    if sustained:
        drops = sorted(sustained, key=lambda d: (-d.seconds, d.scope))
        reason = (
            f"CTR drop sustained for ≥ {_minutes(sustain_s)} on "
            + ", ".join(f"{d.scope} ({_minutes(d.seconds)})" for d in drops)
            + f": {drops[0].cause}"
        )
        return RetuneDecision(Verdict.RETUNE_NOW, reason, RETUNE_COMMAND, ordered, tuple(drops))
    if len(by_signal) >= 2:
        reason = f"{len(by_signal)} plan signals out: {listed}"
        return RetuneDecision(Verdict.SCHEDULE, reason, RETUNE_COMMAND, ordered)
    if by_signal:
        reason = f"1 plan signal out (2 schedule a re-tune): {listed}"
    else:
        reason = "no plan signal out"
    return RetuneDecision(Verdict.WITHIN_BOUNDS, reason, "", ordered)


@dataclass(slots=True)
class _Run:
    since: float
    last: float
    baseline: float
    """Reference CTR when the drop started."""
    cause: str


@dataclass(slots=True)
class CtrSustain:
    """Per surface|variant: since when the plans' CTR drop has been out at every evaluation."""

    config: RetuneConfig = field(default_factory=RetuneConfig)
    runs: dict[str, _Run] = field(default_factory=dict)

    def update(self, now: float, signals: Iterable[DriftSignal]) -> list[SustainedDrop]:
        """Record one evaluation's ``ctr_drop`` signals; return the sustained drops.

        A scope whose drop did not go on now (CTR back within the threshold of its baseline,
        too few impressions, not reported, or a gap) loses its run; it starts a new one when its
        ``ctr_drop`` is out.
        """
        runs: dict[str, _Run] = {}
        for s in signals:
            if s.signal != "ctr_drop":
                continue
            run = self.runs.get(s.scope)
            if run is not None and not (0 <= now - run.last <= self.config.max_gap_s):
                run = None
            # ``ctr`` is there when the current window had enough impressions, even when
            # the rolling reference did not have enough clicks any more (it absorbed the drop)
            ctr = s.stats.get("ctr", math.nan)
            # the drop goes on while the CTR stays below its baseline by the threshold
            if run is not None and ctr <= run.baseline * (1 - s.threshold):
                cause = (
                    f"CTR {s.scope} {ctr:.2%} vs {run.baseline:.2%} before the drop "
                    f"({ctr / run.baseline - 1:+.0%})"
                )
                runs[s.scope] = _Run(run.since, now, run.baseline, cause)
                continue
            if s.out and "reference_ctr" in s.stats:
                runs[s.scope] = _Run(now, now, s.stats["reference_ctr"], s.cause)
        self.runs = runs
        return [
            SustainedDrop(scope, now - run.since, run.cause)
            for scope, run in sorted(runs.items())
            if now - run.since >= self.config.sustain_s
        ]

    def durations(self, now: float) -> dict[str, float]:
        """Seconds each scope's current run has lasted (``streamrec_retune_ctr_drop_seconds``)."""
        return {scope: max(0.0, now - run.since) for scope, run in sorted(self.runs.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "runs": {
                k: [r.since, r.last, r.baseline, r.cause] for k, r in sorted(self.runs.items())
            },
        }

    @classmethod
    def from_dict(cls, config: RetuneConfig, data: Mapping[str, Any]) -> CtrSustain:
        """Restore from :meth:`to_dict`; raises :class:`ValueError` on a bad state."""
        if data.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported retune state version {data.get('version')!r}")
        try:
            runs = {
                str(k): _Run(float(v[0]), float(v[1]), float(v[2]), str(v[3]))
                for k, v in data["runs"].items()
            }
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
            raise ValueError(f"bad retune state: {exc!r}") from exc
        return cls(config, runs)


def signals_out_in_reports(docs: Sequence[Mapping[str, Any]]) -> list[SignalOut]:
    """Plan signals out in the workers' heartbeat reports (their ``drift/SCOPE`` lines).

    A plan signal's line is WARN exactly when it is out (guards passed, past its threshold).
    """
    out: list[SignalOut] = []
    for doc in docs:
        source = str(doc.get("instance", "?"))
        for line in (doc.get("report") or {}).get("lines", []):
            subject, metric = str(line.get("subject", "")), str(line.get("metric", ""))
            if metric not in PLAN_SIGNALS or not subject.startswith("drift/"):
                continue
            if line.get("level") in ("WARN", "CRIT"):
                scope = subject.removeprefix("drift/")
                out.append(SignalOut(metric, scope, str(line.get("detail", "")), source))
    return out
