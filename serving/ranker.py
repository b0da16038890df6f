"""Pure ranking: anchors, co-visitation neighbours, popularity and rules → top-k with reasons.

No I/O here: the recommender reads state, this module decides. Pipeline of :func:`rank`:

1. Personal candidates: ``score(b) = Σ_a w_a · covis(a,b) / N_a / relpop(b)^β`` where
   ``N_a = Σ_b covis(a,b)`` over the neighbours read (``normalisation="row"``) or 1 (``"none"``),
   ``relpop(b) = pop(b) / max pop`` from global popularity (items outside its top N take the
   smallest listed value; β = 0 switches it off).
2. Filters: the request's exclude list, unavailable items, block rules — always; items the
   user has seen — when ``exclude_seen`` (relaxed only if nothing at all would remain).
3. Backfill, each in its own score band below every personal score, so the order is personal
   → segment popularity → global popularity → last-known list; a stage is only read while the
   pool holds fewer than ``k + backfill_depth`` candidates.
4. Boost rules multiply scores (they may lift an item across bands); demoted items ("shown
   often, never clicked") are multiplied by ``demote_factor``.
5. Diversity cap: at most ``max(1, floor(share · k))`` items per category, greedily; if that
   leaves fewer than k items, the best capped-out items are appended (k beats diversity).
6. Pin rules insert their item at the pinned position (block / exclude / unavailable win).

``Ranking.stage`` is the deepest backfill stage any returned item came from.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum

from schemas.rules import Rule
from serving.config import RankerConfig


class Stage(StrEnum):
    """Deepest source an answer had to draw from."""

    NONE = "none"
    SEGMENT_POPULARITY = "segment_popularity"
    GLOBAL_POPULARITY = "global_popularity"
    LAST_KNOWN = "last_known"


STAGE_DEPTH: Mapping[Stage, int] = {s: i for i, s in enumerate(Stage)}


@dataclass(frozen=True, slots=True)
class Anchor:
    """An item the recommendation starts from, with its weight in (0, 1]."""

    item_id: str
    weight: float


@dataclass(frozen=True, slots=True)
class Popularity:
    """A popularity list, best first, with a lookup table."""

    items: tuple[tuple[str, float], ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, float]]) -> Popularity:
        kept = [(i, float(s)) for i, s in pairs if math.isfinite(s) and s > 0]
        kept.sort(key=lambda p: (-p[1], p[0]))
        return cls(tuple(kept), dict(kept))

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def top(self) -> float:
        return self.items[0][1] if self.items else 0.0

    @property
    def floor(self) -> float:
        return self.items[-1][1] if self.items else 0.0


EMPTY_POPULARITY = Popularity()


@dataclass(frozen=True, slots=True)
class RankInput:
    """Everything one ranking needs; built by the recommender from cached and read state."""

    k: int
    now: float
    anchors: Sequence[Anchor] = ()
    neighbours: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)
    segment_popularity: Popularity = EMPTY_POPULARITY
    global_popularity: Popularity = EMPTY_POPULARITY
    last_known: Popularity = EMPTY_POPULARITY
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unavailable: Set[str] = frozenset()
    seen: Set[str] = frozenset()
    exclude: Set[str] = frozenset()
    rules: Sequence[Rule] = ()
    tenant: str = "default"
    surface: str = "home"
    demoted: Set[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RankedItem:
    item_id: str
    score: float
    reasons: tuple[str, ...]
    stage: Stage = Stage.NONE


@dataclass(frozen=True, slots=True)
class Ranking:
    items: tuple[RankedItem, ...]
    stage: Stage


def anchor_weights(
    recent: Sequence[tuple[float, str]],
    explicit: Sequence[str],
    *,
    now: float,
    config: RankerConfig,
) -> list[Anchor]:
    """Anchors from explicit items (weight 1) and recent ``(ts, item)`` history, newest first.

    A recent item at position i with age t gets ``position_decay^i · exp(-t / decay_s)``;
    duplicates keep their largest weight; the ``max_anchors`` heaviest are kept.
    """
    weights: dict[str, float] = {}
    for item in explicit:
        weights.setdefault(item, 1.0)
    for position, (ts, item) in enumerate(recent):
        age = max(0.0, now - ts)
        weight = config.anchor_position_decay**position * math.exp(-age / config.anchor_decay_s)
        if weight > weights.get(item, 0.0):
            weights[item] = weight
    ranked = sorted(weights.items(), key=lambda kv: -kv[1])[: config.max_anchors]
    return [Anchor(item, weight) for item, weight in ranked if weight > 0.0]


_INF = math.inf


@dataclass(slots=True)
class _Candidate:
    item_id: str
    score: float
    reasons: list[str]
    stage: Stage
    personal: bool = False
    anchors: list[str] = field(default_factory=list)  # top contributing anchors, filled late

    def final_reasons(self) -> list[str]:
        return [*(f"co-viewed with {anchor}" for anchor in self.anchors), *self.reasons]


class _Filter:
    """Hard filters (exclude, unavailable, block rules) and the soft seen filter."""

    def __init__(self, inp: RankInput, blocks: Sequence[Rule], respect_seen: bool) -> None:
        self._inp = inp
        self._blocked_items = frozenset(r.item_id for r in blocks if r.item_id is not None)
        self._blocked_cats = frozenset(r.category for r in blocks if r.category is not None)
        self._respect_seen = respect_seen

    def hard_ok(self, item: str) -> bool:
        inp = self._inp
        if item in inp.exclude or item in inp.unavailable or item in self._blocked_items:
            return False
        if self._blocked_cats:
            cats = inp.categories.get(item)
            return not cats or self._blocked_cats.isdisjoint(cats)
        return True

    def ok(self, item: str) -> bool:
        return not (self._respect_seen and item in self._inp.seen) and self.hard_ok(item)


#: (anchor id, factor = w_a / N_a, neighbours) of every anchor that scored something
_Scored = list[tuple[str, float, Sequence[tuple[str, float]]]]


def _personal(
    inp: RankInput, config: RankerConfig, keep: _Filter
) -> tuple[dict[str, _Candidate], _Scored]:
    scores: dict[str, float] = {}
    get = scores.get
    scored: _Scored = []
    row = config.normalisation == "row"
    for anchor in inp.anchors:
        aid = anchor.item_id
        neighbours = inp.neighbours.get(aid)
        if not neighbours:
            continue
        norm = math.fsum(c for b, c in neighbours if 0.0 < c < _INF and b != aid) if row else 1.0
        if norm <= 0.0:
            continue
        factor = anchor.weight / norm
        scored.append((aid, factor, neighbours))
        for item, weight in neighbours:
            if 0.0 < weight < _INF and item != aid:
                scores[item] = get(item, 0.0) + weight * factor
    pop = inp.global_popularity
    beta = config.popularity_exponent if pop else 0.0
    top, floor = pop.top, pop.floor
    out: dict[str, _Candidate] = {}
    for item, score in scores.items():
        if not keep.ok(item):
            continue
        if beta > 0.0:
            score /= (pop.scores.get(item, floor) / top) ** beta  # noqa: PLW2901
        out[item] = _Candidate(item, score, [], Stage.NONE, personal=True)
    return out, scored


def _name_anchors(chosen: Sequence[_Candidate], scored: _Scored) -> None:
    """Attach the (at most two) anchors that contributed most to each chosen personal item."""
    wanted = {c.item_id: c for c in chosen if c.personal}
    if not wanted:
        return
    contributions: dict[str, list[tuple[float, str]]] = {}
    for aid, factor, neighbours in scored:
        for item, weight in neighbours:
            if item in wanted and 0.0 < weight < _INF and item != aid:
                contributions.setdefault(item, []).append((weight * factor, aid))
    for item, cand in wanted.items():
        best = sorted(contributions.get(item, ()), key=lambda ca: -ca[0])[:2]
        cand.anchors = [aid for _, aid in best]


def _backfill(
    inp: RankInput, config: RankerConfig, keep: _Filter, pool: dict[str, _Candidate]
) -> None:
    wanted = inp.k + config.backfill_depth
    floor = min((c.score for c in pool.values()), default=1.0)
    stages = (
        (
            Stage.SEGMENT_POPULARITY,
            inp.segment_popularity,
            f"trending in {inp.tenant}/{inp.surface}",
        ),
        (Stage.GLOBAL_POPULARITY, inp.global_popularity, "popular"),
        (Stage.LAST_KNOWN, inp.last_known, "popular (last known)"),
    )
    for depth, (stage, popularity, reason) in enumerate(stages, start=1):
        if len(pool) >= wanted:
            return
        band_top = floor * 0.5**depth  # band (top/2, top]: below every earlier stage
        for item, value in popularity.items:
            if item in pool or not keep.ok(item):
                continue
            score = band_top * (0.5 + 0.5 * value / popularity.top)
            pool[item] = _Candidate(item, score, [reason], stage)
            if len(pool) >= wanted:
                return


def _apply_boosts(
    inp: RankInput, config: RankerConfig, pool: dict[str, _Candidate], boosts: Sequence[Rule]
) -> None:
    if not boosts and not inp.demoted:
        return
    for cand in pool.values():
        cats = inp.categories.get(cand.item_id, ())
        for rule in boosts:
            if rule.factor is not None and rule.matches(cand.item_id, cats):
                cand.score *= rule.factor
                cand.reasons.append(f"boosted by rule {rule.id}")
        if cand.item_id in inp.demoted:
            cand.score *= config.demote_factor


def _diversify(inp: RankInput, config: RankerConfig, ordered: list[_Candidate]) -> list[_Candidate]:
    k = inp.k
    cap = k if config.max_category_share >= 1.0 else max(1, int(config.max_category_share * k))
    counts: Counter[str] = Counter()
    chosen: list[_Candidate] = []
    capped: list[_Candidate] = []
    for cand in ordered:
        if len(chosen) == k:
            break
        cats = inp.categories.get(cand.item_id, ())
        if any(counts[c] >= cap for c in cats):
            capped.append(cand)
            continue
        chosen.append(cand)
        counts.update(set(cats))
    if len(chosen) < k:
        chosen.extend(capped[: k - len(chosen)])
    return chosen


def _apply_pins(
    inp: RankInput,
    chosen: list[_Candidate],
    pool: dict[str, _Candidate],
    pins: Sequence[Rule],
    keep: _Filter,
) -> tuple[list[_Candidate], set[str]]:
    pinned_ids: set[str] = set()
    ordered_pins = sorted(pins, key=lambda r: (r.position or 0, -_created(r)))
    for rule in ordered_pins:
        item = rule.item_id
        if item is None or rule.position is None or item in pinned_ids or not keep.hard_ok(item):
            continue
        existing = pool.get(item)
        chosen = [c for c in chosen if c.item_id != item]
        reasons = [f"pinned by rule {rule.id}", *(existing.reasons if existing else [])]
        cand = _Candidate(
            item,
            existing.score if existing else 0.0,
            reasons,
            Stage.NONE,
            personal=existing.personal if existing else False,
        )
        chosen.insert(min(rule.position - 1, len(chosen)), cand)
        pinned_ids.add(item)
    chosen = chosen[: inp.k]
    for index, cand in enumerate(chosen):
        if cand.item_id in pinned_ids:
            below = [c.score for c in chosen[index + 1 :] if c.item_id not in pinned_ids]
            above = [c.score for c in chosen[:index] if c.item_id not in pinned_ids]
            cand.score = below[0] if below else (above[-1] if above else max(cand.score, 1.0))
    return chosen, pinned_ids


def _created(rule: Rule) -> float:
    return rule.created_at.timestamp() if rule.created_at is not None else 0.0


def rank(inp: RankInput, config: RankerConfig) -> Ranking:
    """Rank candidates for one request. Empty only when no item is known at all."""
    active = [
        r for r in inp.rules if r.applies(now=inp.now, tenant=inp.tenant, surface=inp.surface)
    ]
    blocks = [r for r in active if r.kind == "block"]
    boosts = [r for r in active if r.kind == "boost"]
    pins = [r for r in active if r.kind == "pin"]
    respect_seen = config.exclude_seen
    while True:
        keep = _Filter(inp, blocks, respect_seen)
        pool, scored = _personal(inp, config, keep)
        _backfill(inp, config, keep, pool)
        if pool or not respect_seen or not inp.seen:
            break
        respect_seen = False  # everything known was seen: repeat beats an empty answer
    _apply_boosts(inp, config, pool, boosts)
    ordered = sorted(pool.values(), key=lambda c: (-c.score, c.item_id))
    chosen, pinned = _apply_pins(inp, _diversify(inp, config, ordered), pool, pins, keep)
    _name_anchors(chosen, scored)
    depth = max((STAGE_DEPTH[c.stage] for c in chosen if c.item_id not in pinned), default=0)
    stage = list(Stage)[depth] if chosen else Stage.LAST_KNOWN
    items = tuple(RankedItem(c.item_id, c.score, tuple(c.final_reasons()), c.stage) for c in chosen)
    return Ranking(items, stage)
