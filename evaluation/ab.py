"""A/B experiment analysis and the ship / hold / rollback decision.

Metrics (per request, see :mod:`evaluation.arms` for the join):

- ``ctr``: share of requests with at least one joined click (Wilson interval, z-test);
  clicks/impressions (distinct clicked items over items shown) is reported alongside;
- ``conversion``: share of requests with at least one joined purchase (Wilson, z-test);
- ``revenue``: mean purchase value per request (percentile bootstrap, fixed seed).

Checks, in the order they decide:

1. Trust: sample-ratio mismatch (chi-square of *users* per variant against the expected split
   at ``srm_alpha``; users because assignment hashes the user, so users are the independent
   unit — when more than 1% of users were seen in several variants the assignment is not
   per user and the check counts requests instead), the share of invalid log lines and the
   outcome join rate. Any failure → **hold**, whatever the metric says.
2. Per treatment: a breach of the error-share or empty-answer-share guardrail alone →
   **hold** (failed answers: the arm was not served as designed, fix it first); a breach of
   latency p95 or fallback share, or a significant degradation of the metric after correction
   → **rollback** (see :class:`AbConfig`). Error and empty answers are read from the flags the
   server writes on its exposures (:mod:`schemas.controls`).

Bandit allocation (issue 20): when the exposures carry ``context.extra["allocation"] =
"bandit"`` the arms' shares moved with the data (Thompson sampling), so this is not a
fixed-split test: the SRM check is skipped (there is no fixed split to compare against), the
per-arm rates and Wilson intervals are reported with the posterior probability that each arm
is best, and the p-values are shown but are not valid (adaptive allocation biases the
per-arm estimates and breaks the z-test's sampling model). The decision is then at most
**hold**: guardrail breaches still hold or roll back as above (they are safety checks on
each arm's own answers), but nothing ships on this evidence — promote with ``--force`` and a
reason (e.g. the P(best) figure), or confirm the winner in a fixed-split experiment.

Holdback: when the logs hold the holdback arm (variant ``holdback``, the users who always get
the baseline) and ``prefer_holdback`` is on, it is the control and every other arm a treatment;
its share is not part of the experiment's split, so the SRM check covers the other arms unless
``expected_split`` names ``holdback``.
3. A significant improvement after correction with enough power (achieved power for the
   relative MDE at the observed sample ≥ ``power``) → **ship**; otherwise **hold**.

The experiment ships the shipping treatment with the largest lift; when none ships it rolls
back if any treatment must be rolled back; otherwise it holds.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from core.errors import ConfigError
from evaluation import stats
from evaluation.ab_model import (
    AbConfig,
    AbResult,
    Comparison,
    Correction,
    Decision,
    Guardrail,
    Metric,
    SrmCheck,
    VariantSummary,
)
from evaluation.arms import ArmData, collect_arms
from evaluation.logs import Logs
from schemas.controls import EXTRA_ALLOCATION, HOLDBACK_VARIANT
from serving.bandit import ArmCounts, BanditPrior, prob_best

#: posterior draws for P(best) under bandit allocation
PROB_BEST_DRAWS = 20_000
BANDIT_SRM_SKIPPED = (
    "bandit allocation: the shares followed the data, there is no fixed split to check"
)
BANDIT_CAVEAT = (
    "bandit (adaptive) allocation: not a fixed-split test; p-values assume a fixed split and "
    "are not valid here, so nothing ships on them (at most hold; promote with --force and a "
    "reason, or confirm in a fixed-split experiment)"
)


def _seed(config: AbConfig, name: str) -> int:
    sequence = np.random.SeedSequence([config.seed, zlib.crc32(name.encode())])
    return int(sequence.generate_state(1)[0])


def _successes(arm: ArmData, metric: Metric) -> int:
    return arm.click_requests if metric is Metric.CTR else arm.purchase_requests


def _summarise(arm: ArmData, config: AbConfig, boot: stats.FloatArray | None) -> VariantSummary:
    n = arm.requests
    revenue = arm.revenue_array()
    if config.metric is Metric.REVENUE and boot is not None:
        value = float(revenue.mean())
        low, high = stats.percentile_interval(boot, config.alpha)
    else:
        successes = _successes(arm, config.metric)
        value = successes / n
        low, high = stats.wilson_interval(successes, n, config.alpha)
    return VariantSummary(
        name=arm.name,
        requests=n,
        users=len(arm.users),
        value=value,
        ci_low=low,
        ci_high=high,
        click_requests=arm.click_requests,
        purchase_requests=arm.purchase_requests,
        impressions=arm.impressions,
        clicked_items=arm.clicked_items,
        items_ctr=arm.clicked_items / arm.impressions if arm.impressions else 0.0,
        revenue_total=float(revenue.sum()),
        latency_p95_ms=arm.latency_p95(),
        fallback_share=arm.fallbacks / n,
        error_share=arm.errors / n,
        empty_share=arm.empties / n,
    )


def _srm(
    arms: Mapping[str, ArmData], split: Mapping[str, float], by_users: bool, alpha: float
) -> SrmCheck:
    names = sorted(split)
    observed = {
        n: (len(arms[n].users) if by_users else arms[n].requests) if n in arms else 0 for n in names
    }
    result = stats.srm_chisquare([observed[n] for n in names], [split[n] for n in names])
    return SrmCheck(
        unit="users" if by_users else "requests",
        observed=observed,
        expected_shares={n: split[n] for n in names},
        statistic=result.statistic,
        p_value=result.p_value,
        alpha=alpha,
        detected=result.p_value < alpha,
    )


def _rate_guardrail(
    name: str, c_hits: int, c_n: int, t_hits: int, t_n: int, config: AbConfig
) -> Guardrail:
    c_rate, t_rate = c_hits / c_n, t_hits / t_n
    test = stats.two_proportion_ztest(t_hits, t_n, c_hits, c_n)
    breached = (
        t_rate - c_rate > config.rate_tolerance
        and test.statistic > 0
        and test.p_value < config.alpha
    )
    return Guardrail(name, c_rate, t_rate, c_rate + config.rate_tolerance, breached)


def _guardrails(control: ArmData, treat: ArmData, config: AbConfig) -> tuple[Guardrail, ...]:
    out = []
    c_p95, t_p95 = control.latency_p95(), treat.latency_p95()
    if c_p95 is not None and t_p95 is not None:
        limit = max(c_p95 * (1 + config.latency_tolerance), c_p95 + config.latency_slack_ms)
        out.append(Guardrail("latency_p95_ms", c_p95, t_p95, limit, t_p95 > limit))
    out.append(
        _rate_guardrail(
            "fallback_share",
            control.fallbacks,
            control.requests,
            treat.fallbacks,
            treat.requests,
            config,
        )
    )
    out.append(
        _rate_guardrail(
            "error_share", control.errors, control.requests, treat.errors, treat.requests, config
        )
    )
    out.append(
        _rate_guardrail(
            "empty_share",
            control.empties,
            control.requests,
            treat.empties,
            treat.requests,
            config,
        )
    )
    return tuple(out)


def _effect_size(control: ArmData, config: AbConfig) -> float | None:
    """Standardised effect of the relative MDE at the control's level, or None if undefined."""
    if config.metric is Metric.REVENUE:
        revenue = control.revenue_array()
        mean, sd = float(revenue.mean()), float(revenue.std(ddof=1)) if revenue.size > 1 else 0.0
        return config.mde * mean / sd if mean > 0 and sd > 0 else None
    base = _successes(control, config.metric) / control.requests
    if not 0.0 < base < 1.0:
        return None
    return stats.cohens_h(min(1.0, base * (1 + config.mde)), base)


#: guardrails on answers that failed or came back empty: an arm breaching them was not served
#: as designed, so its metric cannot be judged; the experiment holds until the failures are fixed
RELIABILITY_GUARDRAILS = frozenset({"error_share", "empty_share"})


def _decide(
    cmp: dict[str, Any], config: AbConfig, *, adaptive: bool = False
) -> tuple[Decision, list[str]]:
    breaches = [g for g in cmp["guardrails"] if g.breached]
    if breaches:
        reasons = [
            f"guardrail breached: {g.name} {g.treatment:.4g} vs control {g.control:.4g} "
            f"(limit {g.limit:.4g})"
            for g in breaches
        ]
        if all(g.name in RELIABILITY_GUARDRAILS for g in breaches):
            return Decision.HOLD, [
                *reasons,
                "failed or empty answers: the arm was not served as designed; fix them, then judge",
            ]
        return Decision.ROLLBACK, reasons
    lift = "n/a" if cmp["lift"] is None else f"{cmp['lift']:+.2%}"
    evidence = f"lift {lift}, adjusted p={cmp['p_adjusted']:.3g} ({config.correction})"
    if adaptive:
        return Decision.HOLD, [f"{evidence} (p-value not valid): {BANDIT_CAVEAT}"]
    power, required = cmp["achieved_power"], cmp["required_per_arm"]
    if cmp["significant"] and cmp["diff"] < 0:
        return Decision.ROLLBACK, [f"significant degradation of {config.metric}: {evidence}"]
    power_note = (
        "power cannot be assessed (degenerate control)"
        if power is None
        else f"underpowered: power {power:.2f} < {config.power} for MDE {config.mde:.1%}, "
        f"need {required} requests per arm"
    )
    if cmp["significant"]:
        if power is not None and power >= config.power:
            return Decision.SHIP, [
                f"significant improvement of {config.metric}: {evidence}; power {power:.2f}"
            ]
        return Decision.HOLD, [f"significant improvement ({evidence}) but {power_note}"]
    reasons = [f"not significant: {evidence} ≥ alpha {config.alpha}"]
    if power is None or power < config.power:
        reasons.append(power_note)
    return Decision.HOLD, reasons


def _compare(
    name: str,
    arms: Mapping[str, ArmData],
    boots: Mapping[str, stats.FloatArray],
    config: AbConfig,
    alpha_plan: float,
) -> dict[str, Any]:
    """Everything about one treatment except the corrected p-value and the decision."""
    control, treat = arms[config.control], arms[name]
    if config.metric is Metric.REVENUE:
        base = float(control.revenue_array().mean())
        observed = float(treat.revenue_array().mean()) - base
        b = stats.bootstrap_diff(boots[name], boots[config.control], observed, config.alpha)
        diff, low, high, p = b.diff, b.low, b.high, b.p_value
    else:
        sc, st = _successes(control, config.metric), _successes(treat, config.metric)
        p = stats.two_proportion_ztest(st, treat.requests, sc, control.requests).p_value
        base = sc / control.requests
        diff = st / treat.requests - base
        low, high = stats.diff_interval_two_proportions(
            st, treat.requests, sc, control.requests, config.alpha
        )
    es = _effect_size(control, config)
    return {
        "variant": name,
        "diff": diff,
        "diff_low": low,
        "diff_high": high,
        "lift": diff / base if base > 0 else None,
        "p_value": p,
        "required_per_arm": None
        if es is None
        else math.ceil(stats.required_sample_size(es, alpha_plan, config.power)),
        "achieved_power": None
        if es is None
        else stats.achieved_power(
            es, control.requests, alpha_plan, treat.requests / control.requests
        ),
        "guardrails": _guardrails(control, treat, config),
    }


def _blockers(srm: SrmCheck, logs: Logs, join_rate: float | None, config: AbConfig) -> list[str]:
    """Trust failures: any of them holds the whole experiment."""
    blockers = []
    if srm.detected:
        shares = {k: round(v, 4) for k, v in srm.expected_shares.items()}
        blockers.append(
            f"SRM detected: {srm.unit} {srm.observed} vs expected shares {shares} "
            f"(chi-square p={srm.p_value:.3g} < {srm.alpha})"
        )
    total = logs.total_lines
    if total and logs.invalid_lines / total > config.max_invalid_share:
        blockers.append(
            f"logs unreliable: {logs.invalid_lines}/{total} lines invalid "
            f"(> {config.max_invalid_share:.1%})"
        )
    if join_rate is not None and join_rate < config.join_floor:
        blockers.append(
            f"logs unreliable: outcome join rate {join_rate:.2%} < {config.join_floor:.2%}"
        )
    return blockers


def _overall(
    comparisons: list[Comparison], blockers: list[str]
) -> tuple[Decision, str | None, list[str], list[Comparison]]:
    """The experiment's decision, winner and reasons from the treatments' decisions."""
    if blockers:
        # nothing is decided on untrustworthy data: every treatment holds, saying what it
        # would have been
        held = [
            replace(
                c,
                decision=Decision.HOLD,
                reasons=("blocked by trust checks", f"would be {c.decision}", *c.reasons),
            )
            for c in comparisons
        ]
        return Decision.HOLD, None, blockers, held
    shipping = [c for c in comparisons if c.decision is Decision.SHIP]
    if shipping:
        best = max(shipping, key=lambda c: c.diff)
        reasons = [f"{best.variant}: {r}" for r in best.reasons]
        reasons += [
            f"{c.variant} ({c.decision}): {r}"
            for c in comparisons
            if c is not best
            for r in c.reasons
        ]
        return Decision.SHIP, best.variant, reasons, comparisons
    rollbacks = [c for c in comparisons if c.decision is Decision.ROLLBACK]
    reasons = [f"{c.variant}: {r}" for c in rollbacks or comparisons for r in c.reasons]
    return (Decision.ROLLBACK if rollbacks else Decision.HOLD), None, reasons, comparisons


def analyze(logs: Logs, config: AbConfig) -> AbResult:
    """Analyse an experiment's logs and decide."""
    summary = collect_arms(logs)
    arms = summary.arms
    holdback_control = config.prefer_holdback and HOLDBACK_VARIANT in arms
    if holdback_control:
        config = replace(config, control=HOLDBACK_VARIANT)
    if config.control not in arms:
        raise ConfigError(
            f"control variant {config.control!r} not in the exposures (variants: "
            f"{', '.join(sorted(arms)) or 'none'})"
        )
    if len(arms) < 2:
        raise ConfigError(f"need at least two variants, found only {config.control!r}")
    split_arms = {
        name: arm
        for name, arm in arms.items()
        if not holdback_control
        or name != HOLDBACK_VARIANT
        or (config.expected_split and HOLDBACK_VARIANT in config.expected_split)
    }
    split = dict(config.expected_split) if config.expected_split else dict.fromkeys(split_arms, 1.0)
    unknown = sorted(set(split_arms) - set(split))
    if unknown:
        raise ConfigError(f"variant(s) {', '.join(unknown)} missing from the expected split")
    total = sum(split.values())
    split = {name: w / total for name, w in split.items()}
    never = sorted(set(split) - set(arms))
    notes = [f"variant {name!r} expected but never served" for name in never]
    if holdback_control:
        notes.append("control: the holdback arm (users who always get the baseline)")
    by_users = summary.multi_variant_users <= 0.01 * summary.total_users
    if not by_users:
        notes.append(
            f"{summary.multi_variant_users} users saw several variants: "
            "SRM counted on requests (assignment is not per user)"
        )
    bandit = any(e.context.extra.get(EXTRA_ALLOCATION) == "bandit" for e in logs.exposures)
    if bandit:
        srm = _skipped_srm(split_arms, by_users, config.srm_alpha)
        notes.append(BANDIT_CAVEAT)
    else:
        srm = _srm(split_arms, split, by_users, config.srm_alpha)

    treatments = sorted(n for n in arms if n != config.control)
    boots: dict[str, stats.FloatArray] = {}
    if config.metric is Metric.REVENUE:
        boots = {
            n: stats.bootstrap_means(a.revenue_array(), config.n_boot, _seed(config, n))
            for n, a in arms.items()
        }
    variants = tuple(
        _summarise(arms[n], config, boots.get(n)) for n in [config.control, *treatments]
    )
    bonferroni = config.correction is Correction.BONFERRONI
    # plan power at the per-comparison level the correction implies (BH adapts: plain alpha)
    alpha_plan = config.alpha / len(treatments) if bonferroni else config.alpha
    raw = [_compare(name, arms, boots, config, alpha_plan) for name in treatments]
    adjust = stats.bonferroni if bonferroni else stats.benjamini_hochberg
    comparisons = []
    for cmp, p_adj in zip(raw, adjust([c["p_value"] for c in raw]).tolist(), strict=True):
        cmp["p_adjusted"] = p_adj
        cmp["significant"] = p_adj < config.alpha
        decision, reasons = _decide(cmp, config, adaptive=bandit)
        comparisons.append(Comparison(**cmp, decision=decision, reasons=tuple(reasons)))
    blockers = _blockers(srm, logs, summary.join_rate, config)
    decision, winner, reasons, comparisons = _overall(comparisons, blockers)
    cfg = asdict(config)
    cfg["expected_split"] = split
    return AbResult(
        metric=config.metric,
        control=config.control,
        config=cfg,
        variants=variants,
        comparisons=tuple(comparisons),
        srm=srm,
        join_rate=summary.join_rate,
        invalid_lines=logs.invalid_lines,
        total_lines=logs.total_lines,
        decision=decision,
        winner=winner,
        reasons=tuple(reasons),
        notes=tuple(notes),
        allocation="bandit" if bandit else "fixed",
        prob_best=_prob_best(arms, config) if bandit else {},
    )


def _skipped_srm(arms: Mapping[str, ArmData], by_users: bool, alpha: float) -> SrmCheck:
    observed = {n: len(a.users) if by_users else a.requests for n, a in sorted(arms.items())}
    return SrmCheck(
        unit="users" if by_users else "requests",
        observed=observed,
        expected_shares={},
        statistic=0.0,
        p_value=1.0,
        alpha=alpha,
        detected=False,
        skipped=BANDIT_SRM_SKIPPED,
    )


def _prob_best(arms: Mapping[str, ArmData], config: AbConfig) -> dict[str, float]:
    """P(arm's request-level rate is the best) under Beta(1, 1) posteriors (CTR/conversion);
    revenue has no Beta model: empty."""
    if config.metric is Metric.REVENUE:
        return {}
    counts = {
        n: ArmCounts(float(a.requests), float(_successes(a, config.metric)))
        for n, a in sorted(arms.items())
    }
    rng = np.random.default_rng(_seed(config, "prob_best"))
    best = prob_best(counts, prior=BanditPrior(), draws=PROB_BEST_DRAWS, rng=rng)
    return {n: round(p, 4) for n, p in best.items()}
