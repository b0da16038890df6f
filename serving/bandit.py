"""Bandit allocation of experiment variants: Thompson sampling over the arms' CTR (pure).

An experiment created with ``allocation: "bandit"`` gives each *new* unit an arm drawn from
an allocation that follows the evidence: arm ``i`` gets ``min_share + (1 - k·min_share)·p_i``
of the new units, where ``p_i`` is the posterior probability that arm ``i`` has the best CTR
(Beta(prior_alpha + clicks, prior_beta + impressions - clicks) per arm, estimated from
``draws`` joint posterior draws). That is Thompson sampling done per allocation period rather
than per request (probability matching), with a floor so every arm keeps learning.

Counts: the worker's ``surface|variant|imp`` / ``|clk`` counters (``surface_variant_ctr``),
summed over surfaces. They are cumulative per variant *name*: give a bandit experiment's arms
names no earlier traffic used (``exp7-a``, not ``control``) or their old counts are its prior.

The draws are seeded from the counts themselves, so every server holding the same counts
computes the same allocation. Stickiness (a unit keeps its arm) is handled by the caller
(:meth:`serving.shared_state.SharedState.assign`): the first arm is stored in Redis with a TTL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from schemas.keyspace import SEGMENT_SEP

__all__ = ["ArmCounts", "BanditPrior", "arm_counts", "prob_best", "thompson_shares"]


@dataclass(frozen=True, slots=True)
class ArmCounts:
    impressions: float
    clicks: float


@dataclass(frozen=True, slots=True)
class BanditPrior:
    alpha: float = 1.0
    beta: float = 1.0


def arm_counts(counters: Mapping[str, float], arms: Sequence[str]) -> dict[str, ArmCounts]:
    """Impressions and clicks per arm from ``surface|variant|imp`` / ``|clk``, all surfaces."""
    wanted = set(arms)
    imps = dict.fromkeys(arms, 0.0)
    clks = dict.fromkeys(arms, 0.0)
    for name, value in counters.items():
        head, sep, kind = name.rpartition(SEGMENT_SEP)
        _surface, sep2, variant = head.partition(SEGMENT_SEP)
        if not sep or not sep2 or variant not in wanted:
            continue
        if kind == "imp":
            imps[variant] += max(0.0, value)
        elif kind == "clk":
            clks[variant] += max(0.0, value)
    return {a: ArmCounts(imps[a], min(clks[a], imps[a])) for a in arms}


def _seed(counts: Mapping[str, ArmCounts]) -> int:
    text = ";".join(f"{a}={c.impressions:.0f}/{c.clicks:.0f}" for a, c in sorted(counts.items()))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def prob_best(
    counts: Mapping[str, ArmCounts],
    *,
    prior: BanditPrior,
    draws: int,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """P(arm has the highest CTR) under independent Beta posteriors, by Monte Carlo.

    ``rng`` None: seeded from the counts (same counts → same answer on every server).
    """
    arms = list(counts)
    if not arms:
        return {}
    gen = rng if rng is not None else np.random.default_rng(_seed(counts))
    a = np.array([prior.alpha + counts[x].clicks for x in arms])
    b = np.array([prior.beta + counts[x].impressions - counts[x].clicks for x in arms])
    samples = gen.beta(a, b, size=(draws, len(arms)))
    wins = np.bincount(samples.argmax(axis=1), minlength=len(arms))
    return {arm: float(w) / draws for arm, w in zip(arms, wins.tolist(), strict=True)}


def thompson_shares(
    counts: Mapping[str, ArmCounts],
    *,
    min_share: float,
    prior: BanditPrior,
    draws: int,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """The allocation of new units: ``min_share`` each, the rest by P(best). Sums to 1."""
    k = len(counts)
    if k == 0:
        return {}
    floor = min(min_share, 1.0 / k)
    best = prob_best(counts, prior=prior, draws=draws, rng=rng)
    free = 1.0 - floor * k
    return {arm: floor + free * p for arm, p in best.items()}
