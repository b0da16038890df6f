"""The pure parts of ``streamrec bench exploration``: a shop with hidden click probabilities,
items arriving over time, the oracle's regret, and the metrics of an answer log.

No I/O: :mod:`streamrec.bench.exploration` drives the real stack with a :class:`World` and
hands the :class:`Answer` log to :func:`summarise`.

The world reuses the demo shop (:class:`streamrec.demo.shop.Shop`) for its catalog, categories
and users with a favourite category. On top, every (user, item) pair has a hidden click
probability ``sigmoid(base + quality_i + affinity · <u, v_i> + favourite_bonus)`` with seeded
latent factors: the simulated users click each shown item with that probability, and the
oracle ranks by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import ConfigError
from streamrec.demo.shop import Shop, ShopConfig

__all__ = [
    "Answer",
    "SimConfig",
    "World",
    "oracle_regret",
    "summarise",
]

LONG_TAIL_HEAD = 0.2  # the top 20 % of items by impressions are the head
WITHIN_ANSWERS = 1000  # a new item counts as shown in time within this many answers
MAX_PAIRS = 20_000_000  # users x items of the dense probability matrix (160 MB of float64)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Size of the simulation and the shape of the hidden probabilities."""

    answers: int = 5000
    items: int = 300
    new_share: float = 0.2  # share of the items that arrive during the run
    users: int = 300
    categories: int = 12
    k: int = 10
    seed: int = 7
    dims: int = 8
    base_logit: float = -4.0  # a typical pair clicks ~2 %, a favourite-category one ~5 %
    quality_sd: float = 0.8
    affinity: float = 1.0
    favourite_bonus: float = 1.0
    new_quality_shift: float = 0.3  # new items are a little better on average (fresh stock)
    history_per_user: int = 5  # organic views per user before the run (the ranker's start)

    def check(self) -> None:
        if self.answers < 10 or self.k < 1 or self.users < 1:
            raise ConfigError("exploration bench needs >= 10 answers, k >= 1 and >= 1 user")
        if not 0.0 < self.new_share < 1.0:
            raise ConfigError(f"new_share must be in (0, 1), got {self.new_share}")
        if self.users * self.items > MAX_PAIRS:
            raise ConfigError(
                f"users x items must be at most {MAX_PAIRS:,} (the hidden probabilities are "
                f"a dense matrix), got {self.users * self.items:,}"
            )
        if self.items < 2 * self.categories:
            raise ConfigError(f"need >= 2 items per category, got {self.items} items")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


class World:
    """Catalog, users, hidden click probabilities and the arrival schedule, from one seed."""

    def __init__(self, cfg: SimConfig) -> None:
        cfg.check()
        self.cfg = cfg
        shop = Shop(
            ShopConfig(items=cfg.items, categories=cfg.categories, users=cfg.users, seed=cfg.seed)
        )
        self.items: list[str] = list(shop.items)
        self.users: list[str] = list(shop.users)
        self.category_of = dict(shop.category_of)
        self.index = {item: i for i, item in enumerate(self.items)}
        self.user_index = {user: u for u, user in enumerate(self.users)}
        rng = np.random.default_rng(cfg.seed)
        n_new = max(1, round(cfg.items * cfg.new_share))
        order = rng.permutation(len(self.items))
        self.new_items: list[str] = [self.items[i] for i in sorted(order[:n_new])]
        new_mask = np.zeros(len(self.items), dtype=bool)
        new_mask[sorted(order[:n_new])] = True
        u_vec = rng.normal(0.0, 1.0, (len(self.users), cfg.dims)) / math.sqrt(cfg.dims)
        i_vec = rng.normal(0.0, 1.0, (len(self.items), cfg.dims))
        quality = (
            rng.normal(0.0, cfg.quality_sd, len(self.items)) + cfg.new_quality_shift * new_mask
        )
        user_fav = np.array([shop.users[u].favourite for u in self.users])
        item_cat = np.array([self.category_of[i] for i in self.items])
        favourite = user_fav[:, None] == item_cat[None, :]
        logits = (
            cfg.base_logit
            + quality[None, :]
            + cfg.affinity * (u_vec @ i_vec.T)
            + cfg.favourite_bonus * favourite
        )
        #: hidden click probability, users × items
        self.p: np.ndarray = _sigmoid(logits)
        # arrivals: evenly over the answers, leaving WITHIN_ANSWERS after the last one when
        # the run is long enough (else the second half of the run)
        first = min(cfg.answers // 10, 200)
        last = max(first, cfg.answers - WITHIN_ANSWERS, cfg.answers // 2)
        slots = np.linspace(first, last, n_new).round().astype(int)
        #: answer index before which each new item is announced
        self.arrival: dict[str, int] = dict(zip(self.new_items, slots.tolist(), strict=True))
        self.initial: list[str] = [
            it for it, new in zip(self.items, new_mask, strict=True) if not new
        ]

    def prob(self, user: str, items: Sequence[str]) -> np.ndarray:
        """Hidden click probabilities of ``user`` for ``items``."""
        return np.asarray(self.p[self.user_index[user], [self.index[i] for i in items]])

    def history(self) -> list[tuple[str, str]]:
        """(user, item) organic views before the run: initial items, drawn by the hidden
        probabilities, so the ranker starts from a popularity that means something."""
        rng = np.random.default_rng(self.cfg.seed + 1)
        cols = np.array([self.index[i] for i in self.initial])
        out: list[tuple[str, str]] = []
        for u, user in enumerate(self.users):
            w = self.p[u, cols]
            n = min(self.cfg.history_per_user, len(cols))
            for j in rng.choice(len(cols), size=n, replace=False, p=w / w.sum()):
                out.append((user, self.initial[int(j)]))
        return out

    def available(self, answer_index: int) -> list[str]:
        """Items in the catalog before answer ``answer_index``."""
        return [i for i in self.items if self.arrival.get(i, -1) <= answer_index]


def oracle_regret(p_available: np.ndarray, p_served: np.ndarray, k: int) -> float:
    """Expected clicks of the oracle's top-k (over ``p_available``) minus the served list's.

    Never below zero when the served items are among the available ones."""
    if p_available.size == 0:
        return 0.0
    top = np.sort(p_available)[::-1][:k]
    return float(top.sum() - p_served.sum())


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer of the run: when, which items, which were explored, what was clicked."""

    index: int  # order of completion, from 0
    t: float  # seconds since the run started
    items: tuple[str, ...]
    explored: tuple[str, ...]
    clicks: int
    expected_clicks: float
    regret: float


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


def summarise(
    log: Sequence[Answer],
    arrival: dict[str, int],
    arrival_t: dict[str, float],
    catalog: int,
    within: int = WITHIN_ANSWERS,
) -> dict[str, object]:
    """The figures of one run from its answer log.

    ``arrival`` / ``arrival_t``: answer index and time (s since start) each new item was
    announced (an item announced but never reached by the run is left out). An item counts
    towards ``new_items_shown_within`` only when the run lasted ``within`` answers after its
    arrival or it was shown (items not shown with fewer answers left are *censored*)."""
    answers = len(log)
    impressions: dict[str, int] = {}
    first: dict[str, Answer] = {}
    for a in log:
        for item in a.items:
            impressions[item] = impressions.get(item, 0) + 1
            first.setdefault(item, a)
    total_imp = sum(impressions.values())
    head_n = max(1, math.ceil(LONG_TAIL_HEAD * catalog))
    head = sorted(impressions.values(), reverse=True)[:head_n]
    reached = {i: n for i, n in arrival.items() if n < answers}
    lag_answers, lag_s = [], []
    in_time = judged = never = 0
    for item, n in reached.items():
        shown = first.get(item)
        if shown is not None and shown.index >= n:
            lag_answers.append(shown.index - n)
            lag_s.append(max(0.0, shown.t - arrival_t.get(item, shown.t)))
            judged += 1
            in_time += shown.index - n < within
        else:
            never += 1
            judged += answers - n >= within
    clicks = sum(a.clicks for a in log)
    explored = sum(len(a.explored) for a in log)
    return {
        "answers": answers,
        "clicks": clicks,
        "clicks_per_1000": 1000.0 * clicks / answers if answers else 0.0,
        "expected_clicks": sum(a.expected_clicks for a in log),
        "regret": sum(a.regret for a in log),
        "regret_per_1000": 1000.0 * sum(a.regret for a in log) / answers if answers else 0.0,
        "impressions": total_imp,
        "explored_impressions": explored,
        "coverage": len(impressions) / catalog if catalog else 0.0,
        "long_tail_share": (total_imp - sum(head)) / total_imp if total_imp else 0.0,
        "new_items": len(reached),
        "new_items_never_shown": never / len(reached) if reached else 0.0,
        "new_items_shown_within": in_time / judged if judged else None,
        "new_items_censored": len(reached) - judged,
        "first_impression_answers_p50": _percentile(lag_answers, 50),
        "first_impression_answers_p95": _percentile(lag_answers, 95),
        "first_impression_s_p50": _percentile(lag_s, 50),
        "first_impression_s_p95": _percentile(lag_s, 95),
    }
