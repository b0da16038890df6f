"""Pure ranking: anchors, co-visitation neighbours, popularity and rules → top-k with reasons.

No I/O here: the recommender reads state, this module decides. Pipeline of :func:`rank`:

1. Personal candidates: ``score(b) = Σ_a w_a · covis(a,b) / N_a / relpop(b)^β`` where
   ``N_a = Σ_b covis(a,b)`` over the neighbours read (``normalisation="row"``) or 1 (``"none"``),
   ``relpop(b) = pop(b) / max pop`` from global popularity (items outside its top N take the
   smallest listed value; β = 0 switches it off). With ``session_blend`` λ > 0 the
   session-neighbour scores ``s(b)`` (best = 1, :mod:`serving.session_neighbours`) are blended
   in: ``(1 - λ) · score(b) + λ · max_b score(b) · s(b)`` (max 1 when co-visitation is empty).
2. Filters: the request's exclude list, unavailable items, block rules — always; items the
   user has seen — when ``exclude_seen`` (relaxed only if nothing at all would remain).
3. Backfill, each in its own score band below every personal score, so the order is personal
   → segment popularity → global popularity → last-known list; a stage is only read while the
   pool holds fewer than ``k + backfill_depth`` candidates. With declared ``interests``
   (categories), the items of those categories in the segment's then global popularity come
   first ("popular in C").
4. Boost rules multiply scores (they may lift an item across bands); demoted items ("shown
   often, never clicked") are multiplied by ``demote_factor``.
5. Diversity cap: at most ``max(1, floor(share · k))`` items per category, greedily; if that
   leaves fewer than k items, the best capped-out items are appended (k beats diversity).
6. Pin rules insert their item at the pinned position (block / exclude / unavailable win).

``Ranking.stage`` is the deepest backfill stage any returned item came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from typing import NamedTuple

from schemas.rules import Rule
from serving import session_neighbours
from serving.config import RankerConfig


class Stage(StrEnum):
    """Deepest source an answer had to draw from."""

    NONE = "none"
    SEGMENT_POPULARITY = "segment_popularity"
    GLOBAL_POPULARITY = "global_popularity"
    LAST_KNOWN = "last_known"
    KILL_SWITCH = "kill_switch"  # set by serving.controls, never by rank()


STAGE_DEPTH: Mapping[Stage, int] = {s: i for i, s in enumerate(Stage)}
_STAGES = tuple(Stage)


class Anchor(NamedTuple):
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
    #: session-neighbour item scores (best = 1), blended when ``session_blend`` > 0
    session_scores: Mapping[str, float] = field(default_factory=dict)
    #: categories the request declares (context ``interests``): their popular items come
    #: before the rest of the backfill
    interests: Set[str] = frozenset()


class RankedItem(NamedTuple):
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
    duplicates keep their largest weight; the ``max_anchors`` heaviest are kept. Ages are in
    event time: measured from the user's newest event (``now`` only bounds it), so a replayed
    historical log personalises exactly as a live one.
    """
    weights: dict[str, float] = {}
    for item in explicit:
        weights.setdefault(item, 1.0)
    get, time_constant, exp = weights.get, config.anchor_decay_s, math.exp
    newest = min(max((ts for ts, _ in recent), default=now), now)
    for (ts, item), position_weight in zip(
        recent, _powers(config.anchor_position_decay, len(recent)), strict=False
    ):
        weight = position_weight * exp(-(newest - ts if ts < newest else 0.0) / time_constant)
        if weight > get(item, 0.0):
            weights[item] = weight
    # reverse=True keeps equal weights in insertion order, as a stable sort by -weight does
    ranked = sorted(weights.items(), key=itemgetter(1), reverse=True)[: config.max_anchors]
    return [Anchor(item, weight) for item, weight in ranked if weight > 0.0]


_POWERS: dict[float, tuple[float, ...]] = {}


def _powers(decay: float, n: int) -> tuple[float, ...]:
    """``(decay**0, decay**1, …)``, at least ``n`` long (cached per decay)."""
    known = _POWERS.get(decay)
    if known is None or len(known) < n:
        if len(_POWERS) > 64:
            _POWERS.clear()
        known = tuple(decay**position for position in range(max(n, 64)))
        _POWERS[decay] = known
    return known


_INF = math.inf
#: (anchor id, factor = w_a / N_a, usable neighbours) of every anchor that scored something
_Scored = list[tuple[str, float, Sequence[tuple[str, float]]]]


@dataclass(slots=True)
class _Pool:
    """Candidates as parallel maps (cheap: most candidates are never returned)."""

    scores: dict[str, float] = field(default_factory=dict)
    stages: dict[str, Stage] = field(default_factory=dict)  # absent = personal
    notes: dict[str, list[str]] = field(default_factory=dict)  # reasons besides anchors


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

    def keep(self, scores: dict[str, float]) -> dict[str, float]:
        """The entries of ``scores`` that pass :meth:`ok`; ``scores`` itself may be filtered.

        Set intersections run in C and visit the smaller side, so a large unavailable or
        seen set costs no more than the candidates.
        """
        inp = self._inp
        out = scores  # _personal's own dict: filtered in place
        for dropped in (
            inp.exclude,
            inp.unavailable,
            inp.seen if self._respect_seen else (),
            self._blocked_items,
        ):
            if not dropped:
                continue
            if isinstance(dropped, set | frozenset):
                gone: Iterable[str] = dropped.intersection(out)
            else:
                gone = [item for item in out if item in dropped]
            for item in gone:
                del out[item]
        if self._blocked_cats:
            out = {item: score for item, score in out.items() if self.hard_ok(item)}
        return out


_Pairs = Sequence[tuple[str, float]]


class _Penalty(NamedTuple):
    """``relpop(b)^β`` of the listed items, and the one value every unlisted item shares."""

    listed: Mapping[str, float]
    unlisted: float


_NO_PENALTY = _Penalty({}, 1.0)


def _penalty(pop: Popularity, beta: float) -> _Penalty:
    if beta <= 0.0 or not pop:
        return _NO_PENALTY
    top = pop.top
    return _Penalty(
        {item: (score / top) ** beta for item, score in pop.items}, (pop.floor / top) ** beta
    )


class _Prepared(NamedTuple):
    """One anchor's row, ready to score: ``valid`` pairs, their sum ``norm`` (1 without row
    normalisation) and ``(b, covis(a,b) / norm / relpop(b)^β)`` per valid pair."""

    valid: _Pairs
    norm: float
    values: Sequence[tuple[str, float]]


def _prepare(
    aid: str, neighbours: _Pairs, allow_self: bool, row: bool, penalty: _Penalty
) -> _Prepared:
    if allow_self:
        valid: _Pairs = [pair for pair in neighbours if 0.0 < pair[1] < _INF]
    else:
        valid = [pair for pair in neighbours if 0.0 < pair[1] < _INF and pair[0] != aid]
    if len(valid) == len(neighbours):
        valid = neighbours  # the usual case: share the row
    norm = math.fsum([c for _, c in valid]) if row else 1.0
    if norm <= 0.0:
        return _Prepared(valid, norm, ())
    if penalty is _NO_PENALTY:
        return _Prepared(valid, norm, [(b, c / norm) for b, c in valid])
    listed, unlisted = penalty.listed.get, penalty.unlisted
    return _Prepared(valid, norm, [(b, c / norm / listed(b, unlisted)) for b, c in valid])


class _PreparedMemo:
    """:func:`_prepare` of immutable rows (tuples), reused while the inputs are the same objects.

    The server's rows come from :class:`~serving.neighbour_cache.NeighbourCache` as tuples and
    stay the same object until Redis invalidates them; the popularity list is replaced only by
    the refresher. So most requests skip this pass. Only tuples are memoised: identity then
    implies equal contents. Bounded (cleared when full).
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._penalty: tuple[Popularity, float, _Penalty] | None = None
        self._rows: dict[str, tuple[_Pairs, bool, bool, _Penalty, _Prepared]] = {}

    def penalty(self, pop: Popularity, beta: float) -> _Penalty:
        known = self._penalty
        if known is not None and known[0] is pop and known[1] == beta:
            return known[2]
        penalty = _penalty(pop, beta)
        self._penalty = (pop, beta, penalty)
        return penalty

    def prepared(
        self, aid: str, neighbours: _Pairs, allow_self: bool, row: bool, penalty: _Penalty
    ) -> _Prepared:
        if type(neighbours) is not tuple:
            return _prepare(aid, neighbours, allow_self, row, penalty)
        entry = self._rows.get(aid)
        if (
            entry is not None
            and entry[0] is neighbours
            and entry[1] is allow_self
            and entry[2] is row
            and entry[3] is penalty
        ):
            return entry[4]
        prepared = _prepare(aid, neighbours, allow_self, row, penalty)
        rows = self._rows
        if len(rows) >= self.max_rows:
            rows.clear()
        rows[aid] = (neighbours, allow_self, row, penalty, prepared)
        return prepared


_MEMO = _PreparedMemo(10_000)


def _personal(inp: RankInput, config: RankerConfig, keep: _Filter) -> tuple[_Pool, _Scored]:
    """``score(b) = Σ_a w_a · (covis(a,b) / N_a / relpop(b)^β)`` over the anchors, filtered."""
    scores: dict[str, float] = {}
    get = scores.get
    scored: _Scored = []
    row = config.normalisation == "row"
    allow_self = config.self_neighbours  # an anchor's self edge (repeat clicks) may score it
    pop = inp.global_popularity
    penalty = _MEMO.penalty(pop, config.popularity_exponent if pop else 0.0)
    prepared = _MEMO.prepared
    for anchor in inp.anchors:
        aid = anchor.item_id
        neighbours = inp.neighbours.get(aid)
        if not neighbours:
            continue
        valid, norm, values = prepared(aid, neighbours, allow_self, row, penalty)
        if norm <= 0.0:
            continue
        weight = anchor.weight
        scored.append((aid, weight / norm, valid))
        for item, value in values:
            scores[item] = get(item, 0.0) + weight * value
    blend = config.session_blend
    if blend > 0.0 and inp.session_scores:
        scale = blend * max(scores.values(), default=0.0) or blend
        for item in scores:
            scores[item] *= 1.0 - blend
        for item, value in inp.session_scores.items():
            scores[item] = get(item, 0.0) + scale * value
    return _Pool(keep.keep(scores)), scored


def _anchor_names(items: Set[str], scored: _Scored) -> dict[str, list[str]]:
    """The (at most two) anchors that contributed most to each of ``items``.

    Best first; on a tie the earlier anchor (the order of a stable sort by contribution).
    ``scored`` holds usable pairs only (see :func:`_prepare`); a self edge never names.
    """
    best: dict[str, tuple[float, str, float, str | None]] = {}
    for aid, factor, neighbours in scored:
        for item, weight in neighbours:
            if item in items and item != aid:
                c = weight * factor
                known = best.get(item)
                if known is None:
                    best[item] = (c, aid, -_INF, None)
                elif c > known[0]:
                    best[item] = (c, aid, known[0], known[1])
                elif known[3] is None or c > known[2]:
                    best[item] = (known[0], known[1], c, aid)
    return {
        item: [first] if second is None else [first, second]
        for item, (_, first, _, second) in best.items()
    }


def _backfill(inp: RankInput, config: RankerConfig, keep: _Filter, pool: _Pool) -> None:
    scores = pool.scores
    wanted = inp.k + config.backfill_depth
    floor = min(scores.values(), default=1.0)
    stages = (
        (
            Stage.SEGMENT_POPULARITY,
            inp.segment_popularity,
            f"trending in {inp.tenant}/{inp.surface}",
        ),
        (Stage.GLOBAL_POPULARITY, inp.global_popularity, "popular"),
        (Stage.LAST_KNOWN, inp.last_known, "popular (last known)"),
    )
    first = 1
    if inp.interests:  # popularity within the declared categories, a band above the rest
        first = 3  # the two interest bands (segment, global) come first
        _backfill_interests(inp, keep, pool, stages[:2], floor * 0.5, wanted)
    for depth, (stage, popularity, reason) in enumerate(stages, start=first):
        if len(scores) >= wanted:
            return
        band_top = floor * 0.5**depth  # band (top/2, top]: below every earlier stage
        for item, value in popularity.items:
            if item in scores or not keep.ok(item):
                continue
            scores[item] = band_top * (0.5 + 0.5 * value / popularity.top)
            pool.stages[item] = stage
            pool.notes[item] = [reason]
            if len(scores) >= wanted:
                return


def _backfill_interests(
    inp: RankInput,
    keep: _Filter,
    pool: _Pool,
    stages: Sequence[tuple[Stage, Popularity, str]],
    band_top: float,
    wanted: int,
) -> None:
    """Items of the declared categories from the segment's, then global popularity."""
    scores, cats, interests = pool.scores, inp.categories, inp.interests
    for stage, popularity, _reason in stages:
        for item, value in popularity.items:
            if len(scores) >= wanted:
                return
            if item in scores or interests.isdisjoint(cats.get(item, ())) or not keep.ok(item):
                continue
            scores[item] = band_top * (0.5 + 0.5 * value / popularity.top)
            pool.stages[item] = stage
            pool.notes[item] = [f"popular in {', '.join(sorted(interests & set(cats[item])))}"]
        band_top *= 0.5


def _apply_boosts(
    inp: RankInput, config: RankerConfig, pool: _Pool, boosts: Sequence[Rule]
) -> None:
    scores = pool.scores
    for rule in boosts:
        factor = rule.factor or 1.0
        if rule.item_id is not None:
            targets: Iterable[str] = (rule.item_id,) if rule.item_id in scores else ()
        else:
            cats = inp.categories
            targets = [i for i in scores if rule.category in cats.get(i, ())]
        for item in targets:
            scores[item] *= factor
            pool.notes.setdefault(item, []).append(f"boosted by rule {rule.id}")
    if inp.demoted:
        for item in inp.demoted & scores.keys() if len(inp.demoted) < len(scores) else scores:
            if item in inp.demoted:
                scores[item] *= config.demote_factor


def _ordered(scores: dict[str, float]) -> list[str]:
    """Item ids by score, ties by id (deterministic).

    The order of ``key=(-score, id)`` without a Python key call: one C sort by score, and
    only when some scores are equal a stable sort by id first (``reverse=True`` keeps equal
    scores in their prior order).
    """
    order = sorted(scores, key=scores.__getitem__, reverse=True)
    if len(set(scores.values())) < len(scores):
        order = sorted(scores)
        order.sort(key=scores.__getitem__, reverse=True)
    return order


def _diversify(inp: RankInput, config: RankerConfig, ordered: list[str]) -> list[str]:
    k = inp.k
    cap = k if config.max_category_share >= 1.0 else max(1, int(config.max_category_share * k))
    if cap >= k:
        return ordered[:k]
    counts: dict[str, int] = {}
    count = counts.get
    categories = inp.categories
    chosen: list[str] = []
    capped: list[str] = []
    for item in ordered:
        if len(chosen) == k:
            break
        cats = categories.get(item, ())
        for c in cats:
            if count(c, 0) >= cap:
                capped.append(item)
                break
        else:
            chosen.append(item)
            for c in cats if len(cats) < 2 else set(cats):
                counts[c] = count(c, 0) + 1
    if len(chosen) < k:
        chosen.extend(capped[: k - len(chosen)])
    return chosen


def _apply_pins(
    inp: RankInput, chosen: list[str], pins: Sequence[Rule], keep: _Filter
) -> tuple[list[str], dict[str, str]]:
    """Insert pinned items; returns the new order and item → pinning rule id."""
    pinned: dict[str, str] = {}
    for rule in sorted(pins, key=lambda r: (r.position or 0, -_created(r))):
        item = rule.item_id
        if item is None or rule.position is None or item in pinned or not keep.hard_ok(item):
            continue
        chosen = [c for c in chosen if c != item]
        chosen.insert(min(rule.position - 1, len(chosen)), item)
        pinned[item] = rule.id
    return chosen[: inp.k], pinned


def _created(rule: Rule) -> float:
    return rule.created_at.timestamp() if rule.created_at is not None else 0.0


def _pinned_scores(
    order: list[str], scores: dict[str, float], pinned: dict[str, str]
) -> list[float]:
    """A pinned item takes the score of the next unpinned item (or the previous, or 1)."""
    own = [scores.get(item, 0.0) for item in order]
    if not pinned:
        return own
    out = []
    for index, item in enumerate(order):
        if item not in pinned:
            out.append(own[index])
            continue
        below = [own[j] for j in range(index + 1, len(order)) if order[j] not in pinned]
        above = [own[j] for j in range(index) if order[j] not in pinned]
        out.append(below[0] if below else (above[-1] if above else max(own[index], 1.0)))
    return out


def request_filter(inp: RankInput, *, respect_seen: bool) -> Callable[[str], bool]:
    """The filters :func:`rank` applies to this request, as a predicate (exploration reuses
    them): not excluded, available, not blocked by an active rule, not seen when asked."""
    blocks = [
        r
        for r in inp.rules
        if r.kind == "block" and r.applies(now=inp.now, tenant=inp.tenant, surface=inp.surface)
    ]
    return _Filter(inp, blocks, respect_seen).ok


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
        if pool.scores or not respect_seen or not inp.seen:
            break
        respect_seen = False  # everything known was seen: repeat beats an empty answer
    _apply_boosts(inp, config, pool, boosts)
    candidates = pool.scores
    order, pinned = _apply_pins(inp, _diversify(inp, config, _ordered(candidates)), pins, keep)
    stages, notes = pool.stages, pool.notes
    personal = {i for i in order if i in candidates and i not in stages}
    anchors = _anchor_names(personal, scored) if personal else {}
    session_scores = inp.session_scores if config.session_blend > 0.0 else {}
    scores = _pinned_scores(order, candidates, pinned)
    items = []
    depth = 0
    for item, score in zip(order, scores, strict=True):
        reasons = [f"pinned by rule {pinned[item]}"] if item in pinned else []
        names = anchors.get(item)
        if names:
            reasons.extend(["co-viewed with " + a for a in names])
        if item in session_scores and item in personal:
            reasons.append(session_neighbours.REASON)
        note = notes.get(item)
        if note:
            reasons.extend(note)
        stage = Stage.NONE if item in pinned else stages.get(item, Stage.NONE)
        if stage is not Stage.NONE:
            depth = max(depth, STAGE_DEPTH[stage])
        items.append(RankedItem(item, score, tuple(reasons), stage))
    if not items:
        return Ranking((), Stage.LAST_KNOWN)
    return Ranking(tuple(items), _STAGES[depth])
