"""The data of an A/B analysis: metric and decision enums, the configuration, the results.

See :mod:`evaluation.ab` for how they are computed and what each decision means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from core.errors import ConfigError


class Metric(StrEnum):
    """What is compared: request click-through, request conversion, revenue per request."""

    CTR = "ctr"
    CONVERSION = "conversion"
    REVENUE = "revenue"


class Correction(StrEnum):
    """Multiple-comparison correction over the treatments (FDR or family-wise)."""

    BH = "bh"
    BONFERRONI = "bonferroni"


class Decision(StrEnum):
    """What to do with a treatment / the experiment."""

    SHIP = "ship"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class AbConfig:
    """How to analyse and decide. Tolerances are what a treatment may lose before rollback."""

    metric: Metric = Metric.CTR
    control: str = "control"
    alpha: float = 0.05
    mde: float = 0.05
    power: float = 0.8
    expected_split: Mapping[str, float] | None = None
    correction: Correction = Correction.BH
    srm_alpha: float = 0.001
    join_floor: float = 0.95
    max_invalid_share: float = 0.01
    latency_tolerance: float = 0.20  # relative increase of latency p95 …
    latency_slack_ms: float = 2.0  # … that is also at least this many ms
    rate_tolerance: float = 0.01  # absolute increase of fallback / error / empty share
    #: when the logs hold the holdback arm (``schemas.controls.HOLDBACK_VARIANT``) it is the
    #: control and every other arm a treatment (False: ``control`` as given)
    prefer_holdback: bool = True
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        for name, enum in (("metric", Metric), ("correction", Correction)):
            value = getattr(self, name)
            if value not in set(enum):  # accept plain strings for the enums
                allowed = ", ".join(e.value for e in enum)
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
            object.__setattr__(self, name, enum(value))
        for name in ("alpha", "power", "srm_alpha"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.power <= self.alpha:
            raise ConfigError("power must be larger than alpha")
        if not 0.0 < self.mde < 10.0:
            raise ConfigError(f"mde is a relative change in (0, 10), got {self.mde}")
        for name in ("join_floor", "max_invalid_share", "rate_tolerance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.latency_tolerance < 0 or self.latency_slack_ms < 0:
            raise ConfigError("latency tolerances must be non-negative")
        if self.expected_split is not None and (
            len(self.expected_split) < 2
            or not all(math.isfinite(w) and w > 0 for w in self.expected_split.values())
        ):
            raise ConfigError("expected split needs two or more variants with positive weights")
        if not 100 <= self.n_boot <= 100_000:
            raise ConfigError(f"n_boot must be in [100, 100000], got {self.n_boot}")


def parse_split(text: str) -> dict[str, float]:
    """Parse ``"control=0.5,treatment=0.5"`` (weights are normalised to shares)."""
    split: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not sep or not name.strip() or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"expected split like control=0.5,treatment=0.5, got {text!r}")
        if name.strip() in split:
            raise ConfigError(f"variant {name.strip()!r} appears twice in the split")
        split[name.strip()] = value
    if len(split) < 2:
        raise ConfigError("the expected split needs at least two variants")
    total = sum(split.values())
    return {name: w / total for name, w in split.items()}


@dataclass(frozen=True)
class VariantSummary:
    """One variant: sizes, the metric with its interval, and the guardrail measures.

    ``value`` is the metric (a share of requests for ctr/conversion, mean revenue per request
    for revenue) with ``[ci_low, ci_high]`` (Wilson, or bootstrap percentile for revenue).
    """

    name: str
    requests: int
    users: int
    value: float  # the metric: a rate for ctr/conversion, mean revenue per request
    ci_low: float
    ci_high: float
    click_requests: int
    purchase_requests: int
    impressions: int
    clicked_items: int
    items_ctr: float  # clicked items / impressions
    revenue_total: float
    latency_p95_ms: float | None
    fallback_share: float
    error_share: float
    empty_share: float = 0.0


@dataclass(frozen=True)
class Guardrail:
    """A guardrail measure of a treatment against control; breached when beyond ``limit``."""

    name: str
    control: float
    treatment: float
    limit: float
    breached: bool


@dataclass(frozen=True)
class Comparison:
    """One treatment against control on the metric.

    ``diff`` = treatment − control with its interval, ``lift`` = diff / control (None when
    control is 0), ``p_adjusted`` after the correction over all treatments,
    ``required_per_arm`` / ``achieved_power`` for the relative MDE (None when the control
    is degenerate), and the treatment's own decision with its reasons.
    """

    variant: str
    diff: float
    diff_low: float
    diff_high: float
    lift: float | None
    p_value: float
    p_adjusted: float
    significant: bool
    required_per_arm: int | None
    achieved_power: float | None
    guardrails: tuple[Guardrail, ...]
    decision: Decision
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SrmCheck:
    """Sample-ratio-mismatch check: counts of ``unit`` (users or requests) per variant."""

    unit: str
    observed: dict[str, int]
    expected_shares: dict[str, float]
    statistic: float
    p_value: float
    alpha: float
    detected: bool
    skipped: str = ""
    """Why the check was not run (bandit allocation: there is no fixed split); "" = it ran."""


@dataclass(frozen=True)
class AbResult:
    """The analysis of one experiment: evidence, trust checks and the decision."""

    metric: Metric
    control: str
    config: dict[str, Any]
    variants: tuple[VariantSummary, ...]
    comparisons: tuple[Comparison, ...]
    srm: SrmCheck
    join_rate: float | None
    invalid_lines: int
    total_lines: int
    decision: Decision
    winner: str | None
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    allocation: str = "fixed"
    """``bandit`` when the exposures say the variants were allocated adaptively (issue 20)."""
    prob_best: dict[str, float] = field(default_factory=dict)
    """Bandit allocation: posterior P(arm has the best metric rate), Beta(1, 1) prior."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self)
