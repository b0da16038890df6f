"""Exploration slots: Thompson sampling over under-exposed items (pure, no I/O).

The recommender hands :func:`explore` a finished ranking, the exploration pool (items the
catalog announced recently, with the impressions and clicks the worker's exposure join
counted, :class:`Arm`) and a filter that says which items this request may show (available,
not blocked, not seen, not excluded: the ranker's own filters). It returns the ranking with a
bounded share of slots replaced by explored items, each marked with :data:`EXPLORING_REASON`.

* **Slots.** ``share · k`` slots in expectation: ``floor(share · k)`` plus one more with
  probability ``frac(share · k)`` (so a share of 10 % explores one slot in every second answer
  of five items, never more than ``ceil(share · k)``). ``share = 0`` turns exploration off.
  Explored items take the *last* slots of the answer, so the ranked head is never displaced.
* **Posterior.** Each arm's click-through rate is ``Beta(α + clicks, β + impressions −
  clicks)`` (prior α, β from settings). One draw per arm (vectorised over an
  :class:`ArmTable` built off the request path); the highest draws among the arms the
  request allows fill the slots (Thompson sampling).
* **Safety.** An arm whose posterior is confidently below the surface's CTR —
  ``P(ctr > surface_ctr) < min_prob_above`` — is not explored; nor is an arm past
  ``max_impressions`` (it has had its chance: it left the new-item pool).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from schemas.events import EXPLORING_REASON
from serving.ranker import RankedItem, Ranking, Stage

__all__ = [
    "EMPTY_TABLE",
    "EXPLORING_REASON",
    "Arm",
    "ArmTable",
    "ExplorationConfig",
    "choose",
    "explore",
    "posterior",
    "prob_above",
    "slot_count",
    "surface_ctrs",
    "worth_exploring",
]


class Arm(NamedTuple):
    """One exploration candidate: an item with its joined impressions and clicks."""

    item_id: str
    impressions: float
    clicks: float
    announced_ts: float = 0.0


@dataclass(frozen=True, slots=True)
class ExplorationConfig:
    """Exploration settings (see core/settings.py ``exploration_*``)."""

    share: float = 0.1
    share_by_surface: Mapping[str, float] = field(default_factory=dict)
    prior_alpha: float = 1.0
    prior_beta: float = 19.0
    min_prob_above: float = 0.05
    max_impressions: float = 1000.0
    max_age_s: float = 7 * 86400.0

    def share_for(self, surface: str) -> float:
        """The share of slots explored on ``surface`` (0 = off)."""
        return self.share_by_surface.get(surface, self.share)

    @property
    def prior_ctr(self) -> float:
        return self.prior_alpha / (self.prior_alpha + self.prior_beta)


def posterior(arm: Arm, config: ExplorationConfig) -> tuple[float, float]:
    """The Beta posterior ``(α, β)`` of an arm's click-through rate."""
    clicks = max(0.0, arm.clicks)
    misses = max(0.0, arm.impressions - clicks)
    return config.prior_alpha + clicks, config.prior_beta + misses


@lru_cache(maxsize=65_536)
def prob_above(alpha: float, beta: float, threshold: float) -> float:
    """``P(X > threshold)`` for ``X ~ Beta(alpha, beta)`` (regularized incomplete beta).

    Cached: most arms of a pool share their counts (a new item has none).
    """
    if threshold <= 0.0:
        return 1.0
    if threshold >= 1.0:
        return 0.0
    return 1.0 - _betainc(alpha, beta, threshold)


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (Lentz's continued fraction)."""
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float, *, eps: float = 1e-12, iterations: int = 400) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def worth_exploring(
    arm: Arm, surface_ctr: float, config: ExplorationConfig, *, now: float | None = None
) -> bool:
    """False once an arm has had its impressions or its age (at ``now``, when given), or is
    confidently below ``surface_ctr``."""
    if arm.impressions >= config.max_impressions:
        return False
    if now is not None and now - arm.announced_ts > config.max_age_s:
        return False
    alpha, beta = posterior(arm, config)
    return prob_above(alpha, beta, surface_ctr) >= config.min_prob_above


def slot_count(k: int, share: float, rng: np.random.Generator) -> int:
    """How many of ``k`` slots to explore: ``share · k`` in expectation, randomised rounding."""
    if share <= 0.0 or k < 1:
        return 0
    expected = min(1.0, share) * k
    whole = math.floor(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


@dataclass(frozen=True, slots=True)
class ArmTable:
    """The arms worth exploring against one surface CTR, as arrays for vectorised draws.

    Built off the request path (:meth:`build`, by the shared-state refresher); a request only
    draws from it (:func:`choose`).
    """

    items: tuple[str, ...] = ()
    alpha: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    beta: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    announced: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))

    @classmethod
    def build(cls, arms: Sequence[Arm], surface_ctr: float, config: ExplorationConfig) -> ArmTable:
        kept = [a for a in arms if worth_exploring(a, surface_ctr, config)]
        params = [posterior(a, config) for a in kept]
        return cls(
            tuple(a.item_id for a in kept),
            np.array([a for a, _ in params], dtype=np.float64),
            np.array([b for _, b in params], dtype=np.float64),
            np.array([a.announced_ts for a in kept], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.items)


EMPTY_TABLE = ArmTable()


def choose(
    table: ArmTable,
    n: int,
    *,
    allowed: Callable[[str], bool],
    config: ExplorationConfig,
    rng: np.random.Generator,
    now: float | None = None,
) -> list[str]:
    """Thompson sampling: one posterior draw per arm (vectorised), then the ``n`` best draws
    among the arms this request allows (and, with ``now``, not past ``max_age_s``)."""
    if n <= 0 or not table.items:
        return []
    draws = rng.beta(table.alpha, table.beta)
    if now is not None:
        draws[now - table.announced > config.max_age_s] = -1.0
    picked: list[str] = []
    head = min(len(draws), 4 * n + 16)  # the best draws, enough unless many are filtered out
    order = np.argpartition(-draws, head - 1)[:head] if head < len(draws) else np.arange(head)
    for candidates in (order[np.argsort(-draws[order])], np.argsort(-draws)):
        picked.clear()
        for index in candidates.tolist():
            if draws[index] < 0.0:
                return picked
            item = table.items[index]
            if allowed(item):
                picked.append(item)
                if len(picked) == n:
                    return picked
        if head == len(draws):
            break
    return picked


def explore(
    ranking: Ranking,
    table: ArmTable,
    *,
    k: int,
    surface: str,
    allowed: Callable[[str], bool],
    config: ExplorationConfig,
    rng: np.random.Generator,
    now: float | None = None,
) -> Ranking:
    """``ranking`` with up to ``share · k`` of its last slots given to explored items.

    ``table`` holds the arms worth exploring on the request's surface (:meth:`ArmTable.build`
    with the surface's CTR). Items already in the answer are not explored again; the answer
    keeps at most ``k`` items. ``now`` (event time) drops arms older than ``max_age_s``.
    """
    if not table.items:
        return ranking
    n = slot_count(k, config.share_for(surface), rng)
    if n == 0:
        return ranking
    shown = {item.item_id for item in ranking.items}
    picked = choose(
        table,
        n,
        allowed=lambda item: item not in shown and allowed(item),
        config=config,
        rng=rng,
        now=now,
    )
    if not picked:
        return ranking
    kept = list(ranking.items[: max(0, min(len(ranking.items), k) - len(picked))])
    floor = kept[-1].score if kept else 1.0
    explored = [
        RankedItem(item, floor * 0.5**position, (EXPLORING_REASON,), Stage.NONE)
        for position, item in enumerate(picked, start=1)
    ]
    return Ranking(tuple(kept + explored), ranking.stage)


def surface_ctrs(counters: Mapping[str, float]) -> dict[str, float]:
    """Per-surface CTR from the worker's ``surface|variant|imp`` / ``|clk`` counters."""
    imps: dict[str, float] = {}
    clks: dict[str, float] = {}
    for name, value in counters.items():
        surface, sep, rest = name.partition("|")
        variant_sep = rest.rfind("|")
        if not sep or variant_sep < 0:
            continue
        kind = rest[variant_sep + 1 :]
        if kind == "imp":
            imps[surface] = imps.get(surface, 0.0) + value
        elif kind == "clk":
            clks[surface] = clks.get(surface, 0.0) + value
    return {s: clks.get(s, 0.0) / n for s, n in imps.items() if n > 0}
