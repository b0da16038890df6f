"""Top-k accuracy metrics of next-item prediction: HR@k, MRR@k, NDCG@k, catalog coverage.

Pure and incremental. Each prediction has exactly one relevant item (the event that really
happened next), so with ``r`` its 1-based rank in the top-k list (no hit: no ``r``):

* HR@k = share of predictions whose target is in the top k;
* MRR@k = mean of ``1 / r`` (0 on a miss);
* NDCG@k = mean of ``1 / log2(r + 1)`` (0 on a miss) — the ideal DCG of one relevant item is 1;
* coverage = distinct items recommended in any top-k list / catalog size (items of the log).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


def hit_rank(recommended: Sequence[str], target: str, k: int) -> int | None:
    """1-based rank of ``target`` in the first ``k`` items, None when absent."""
    for position, item in enumerate(recommended[:k], start=1):
        if item == target:
            return position
    return None


@dataclass(frozen=True, slots=True)
class Scores:
    """Final figures of one recommender over one run."""

    hr: float
    mrr: float
    ndcg: float
    coverage: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "hr": self.hr,
            "mrr": self.mrr,
            "ndcg": self.ndcg,
            "coverage": self.coverage,
            "n": self.n,
        }


@dataclass(slots=True)
class Accumulator:
    """Adds predictions one at a time; :meth:`scores` gives the means so far."""

    k: int
    hits: int = 0
    reciprocal: float = 0.0
    gain: float = 0.0
    n: int = 0
    recommended: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")

    def add(self, recommended: Sequence[str], target: str) -> int | None:
        """Record one prediction; return the target's rank (None on a miss)."""
        top = recommended[: self.k]
        self.recommended.update(top)
        self.n += 1
        rank = hit_rank(top, target, self.k)
        if rank is not None:
            self.hits += 1
            self.reciprocal += 1.0 / rank
            self.gain += 1.0 / math.log2(rank + 1)
        return rank

    def scores(self, catalog_size: int) -> Scores:
        """Means over the predictions added; coverage against ``catalog_size`` items."""
        n = self.n
        coverage = min(1.0, len(self.recommended) / catalog_size) if catalog_size > 0 else 0.0
        if n == 0:
            return Scores(0.0, 0.0, 0.0, coverage, 0)
        return Scores(self.hits / n, self.reciprocal / n, self.gain / n, coverage, n)


def evaluate_lists(
    predictions: Iterable[tuple[Sequence[str], str]], *, k: int, catalog: Iterable[str]
) -> Scores:
    """Scores of ``(top-k list, target)`` pairs against a catalog (convenience for tests)."""
    acc = Accumulator(k)
    for recommended, target in predictions:
        acc.add(recommended, target)
    return acc.scores(len(set(catalog)))
