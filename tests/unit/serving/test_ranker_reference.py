"""The tuned ranker equals the straightforward one, bit for bit, on randomized inputs.

``serving.ranker`` trades readability for speed in its hot helpers (set intersections for the
filters, rows prepared once and memoised while the same tuple is passed again, two C sorts
instead of a key tuple, a two-best scan for the "co-viewed with" anchors). The reference
helpers below are the plain versions those replaced; every ranking is computed both ways and
must be *equal* (scores compared exactly). Each score is ``Σ_a w_a · (covis(a,b) / N_a /
relpop(b)^β)``, evaluated in that order by both.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Set
from dataclasses import replace
from typing import Any

import pytest

from schemas.rules import Rule
from serving import ranker
from serving.config import RankerConfig
from serving.ranker import Anchor, Popularity, RankInput, rank

NOW = 1_700_000_000.0
_INF = math.inf


# --- reference helpers (plain versions of the tuned ones) -------------------------------------
def ref_keep(self: Any, scores: dict[str, float]) -> dict[str, float]:
    return {item: score for item, score in scores.items() if self.ok(item)}


def ref_personal(inp: RankInput, config: RankerConfig, keep: Any) -> tuple[Any, Any]:
    scores: dict[str, float] = {}
    scored = []
    row = config.normalisation == "row"
    allow_self = config.self_neighbours
    pop = inp.global_popularity
    beta = config.popularity_exponent if pop else 0.0
    for anchor in inp.anchors:
        aid = anchor.item_id
        neighbours = inp.neighbours.get(aid)
        if not neighbours:
            continue
        norm = (
            math.fsum(c for b, c in neighbours if 0.0 < c < _INF and (allow_self or b != aid))
            if row
            else 1.0
        )
        if norm <= 0.0:
            continue
        scored.append((aid, anchor.weight / norm, neighbours))
        for item, weight in neighbours:
            if 0.0 < weight < _INF and (allow_self or item != aid):
                value = weight / norm
                if beta > 0.0:
                    value /= (pop.scores.get(item, pop.floor) / pop.top) ** beta
                scores[item] = scores.get(item, 0.0) + anchor.weight * value
    return ranker._Pool(keep.keep(scores)), scored


def ref_anchor_names(items: Set[str], scored: Any) -> dict[str, list[str]]:
    contributions: dict[str, list[tuple[float, str]]] = {}
    for aid, factor, neighbours in scored:
        for item, weight in neighbours:
            if item in items and 0.0 < weight < _INF and item != aid:
                contributions.setdefault(item, []).append((weight * factor, aid))
    return {
        item: [aid for _, aid in sorted(pairs, key=lambda ca: -ca[0])[:2]]
        for item, pairs in contributions.items()
    }


def ref_ordered(scores: dict[str, float]) -> list[str]:
    return [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def ref_diversify(inp: RankInput, config: RankerConfig, ordered: list[str]) -> list[str]:
    k = inp.k
    cap = k if config.max_category_share >= 1.0 else max(1, int(config.max_category_share * k))
    if cap >= k:
        return ordered[:k]
    counts: Counter[str] = Counter()
    chosen: list[str] = []
    capped: list[str] = []
    for item in ordered:
        if len(chosen) == k:
            break
        cats = inp.categories.get(item, ())
        if any(counts[c] >= cap for c in cats):
            capped.append(item)
            continue
        chosen.append(item)
        counts.update(set(cats))
    if len(chosen) < k:
        chosen.extend(capped[: k - len(chosen)])
    return chosen


# --- random inputs ----------------------------------------------------------------------------
ITEMS = [f"i{n}" for n in range(40)]
WEIGHTS = (1.0, 2.0, 3.0, 5.0, 0.1, 1e-9, 7.5)  # few values: ties in scores and contributions


def _subset(rnd: random.Random, k: int) -> list[str]:
    return rnd.sample(ITEMS, rnd.randint(0, k))


def _as_set(rnd: random.Random, items: list[str]) -> Set[str]:
    kind = rnd.randrange(3)  # the filters take any Set: sets, frozensets, key views
    if kind == 0:
        return set(items)
    if kind == 1:
        return frozenset(items)
    return dict.fromkeys(items).keys()


def _neighbours(rnd: random.Random, anchor: str) -> list[tuple[str, float]]:
    pairs = [(b, rnd.choice(WEIGHTS)) for b in _subset(rnd, 12)]
    if rnd.random() < 0.3:
        pairs.append((anchor, rnd.choice(WEIGHTS)))  # a self edge
    if rnd.random() < 0.2:
        pairs.append((rnd.choice(ITEMS), rnd.choice((0.0, -1.0, _INF))))  # not usable
    if rnd.random() < 0.1 and pairs:
        pairs.append(pairs[0])  # listed twice
    rnd.shuffle(pairs)
    return pairs


def _popularity(rnd: random.Random) -> Popularity:
    if rnd.random() < 0.2:
        return Popularity()
    return Popularity.of((i, rnd.choice(WEIGHTS) * 10) for i in _subset(rnd, 15))


def _rules(rnd: random.Random) -> list[Rule]:
    rules = []
    for n in range(rnd.randint(0, 4)):
        kind = rnd.choice(("pin", "boost", "block"))
        fields: dict[str, Any] = {"id": f"r{n}", "kind": kind}
        if kind == "pin":
            fields |= {"item_id": rnd.choice(ITEMS), "position": rnd.randint(1, 5)}
        elif rnd.random() < 0.5:
            fields["item_id"] = rnd.choice(ITEMS)
        else:
            fields["category"] = f"c{rnd.randrange(4)}"
        if kind == "boost":
            fields["factor"] = rnd.choice((0.5, 2.0, 10.0))
        rules.append(Rule.model_validate(fields))
    return rules


def random_case(seed: int) -> tuple[RankInput, RankerConfig]:
    rnd = random.Random(seed)
    anchors = [Anchor(a, rnd.choice((1.0, 0.5, 0.25, 0.3))) for a in _subset(rnd, 6)]
    neighbour_owners = [a.item_id for a in anchors] + _subset(rnd, 2)
    categories = {
        i: tuple(rnd.sample([f"c{n}" for n in range(4)], rnd.randint(0, 2)))
        for i in ITEMS
        if rnd.random() < 0.9
    }
    inp = RankInput(
        k=rnd.randint(1, 15),
        now=NOW,
        anchors=anchors,
        neighbours={a: _neighbours(rnd, a) for a in neighbour_owners},
        segment_popularity=_popularity(rnd),
        global_popularity=_popularity(rnd),
        last_known=_popularity(rnd),
        categories=categories,
        unavailable=_as_set(rnd, _subset(rnd, 4)),
        seen=_as_set(rnd, _subset(rnd, 12)),
        exclude=_as_set(rnd, _subset(rnd, 3)),
        rules=_rules(rnd),
        demoted=frozenset(_subset(rnd, 4)),
    )
    config = RankerConfig(
        normalisation=rnd.choice(("row", "none")),
        self_neighbours=rnd.random() < 0.3,
        popularity_exponent=rnd.choice((0.0, 0.25, 1.0)),
        max_category_share=rnd.choice((0.2, 0.5, 1.0)),
        exclude_seen=rnd.random() < 0.8,
        demote_factor=rnd.choice((0.5, 1.0)),
        backfill_depth=rnd.choice((1, 5, 20)),
    )
    return inp, config


def reference_rank(inp: RankInput, config: RankerConfig, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(ranker._Filter, "keep", ref_keep)
        patch.setattr(ranker, "_personal", ref_personal)
        patch.setattr(ranker, "_anchor_names", ref_anchor_names)
        patch.setattr(ranker, "_ordered", ref_ordered)
        patch.setattr(ranker, "_diversify", ref_diversify)
        return rank(inp, config)


@pytest.mark.parametrize("block", range(10))
def test_tuned_ranker_equals_the_reference(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    personal = backfilled = 0
    for seed in range(block * 100, block * 100 + 100):
        inp, config = random_case(seed)
        expected = reference_rank(inp, config, monkeypatch)
        assert rank(inp, config) == expected, f"seed {seed}"
        personal += any(i.reasons and i.reasons[0].startswith("co-viewed") for i in expected.items)
        backfilled += expected.stage is not ranker.Stage.NONE
    assert personal > 30 and backfilled > 10  # the cases exercise both kinds of answers


def _with_tuple_rows(inp: RankInput) -> RankInput:
    return replace(inp, neighbours={a: tuple(pairs) for a, pairs in inp.neighbours.items()})


@pytest.mark.parametrize("block", range(3))
def test_memoised_rows_give_the_reference_answer(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tuple rows are prepared once per (row, popularity) object; reuse must not leak.

    Each case is ranked twice with the same tuples (the second answer comes from the memo),
    then with equal rows in new tuple objects, then after another case has replaced the memo
    entries of the same anchor ids with other rows and another popularity list.
    """
    cases = [random_case(seed) for seed in range(block * 50, block * 50 + 50)]
    tupled = [(_with_tuple_rows(inp), config) for inp, config in cases]
    for (inp, config), (again, _) in zip(cases, tupled, strict=True):
        expected = reference_rank(inp, config, monkeypatch)
        assert rank(again, config) == expected
        assert rank(again, config) == expected  # memo hit
        assert rank(_with_tuple_rows(inp), config) == expected  # new objects: prepared anew
    for inp, config in reversed(cases):  # every anchor id's entry now holds another row
        assert rank(_with_tuple_rows(inp), config) == reference_rank(inp, config, monkeypatch)


def test_a_reused_row_object_follows_a_new_popularity_list() -> None:
    config = RankerConfig(popularity_exponent=1.0, max_category_share=1.0)
    row = (("b", 1.0), ("c", 1.0))
    base = RankInput(k=2, now=NOW, anchors=[Anchor("a", 1.0)], neighbours={"a": row})
    first = rank(replace(base, global_popularity=Popularity.of([("b", 10.0), ("c", 1.0)])), config)
    second = rank(replace(base, global_popularity=Popularity.of([("c", 10.0), ("b", 1.0)])), config)
    assert [i.item_id for i in first.items] == ["c", "b"]  # the popular b is penalised
    assert [i.item_id for i in second.items] == ["b", "c"]


def test_the_reference_is_really_swapped_in(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def spy(scores: dict[str, float]) -> list[str]:
        calls.append(len(scores))
        return ref_ordered(scores)

    monkeypatch.setattr(ranker, "_ordered", spy)
    inp, config = random_case(1)
    rank(inp, config)
    assert calls
