"""Known-answer tests of the pure ranker (serving.ranker)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.rules import Rule
from serving.config import RankerConfig
from serving.ranker import (
    Anchor,
    Popularity,
    RankInput,
    Stage,
    anchor_weights,
    rank,
)

NOW = 1_700_000_000.0
CFG = RankerConfig(popularity_exponent=0.0, max_category_share=1.0)


def ids(inp: RankInput, config: RankerConfig = CFG) -> list[str]:
    return [item.item_id for item in rank(inp, config).items]


def one_anchor(neighbours: list[tuple[str, float]], **kw: Any) -> RankInput:
    base: dict[str, Any] = {
        "k": 3,
        "now": NOW,
        "anchors": [Anchor("a", 1.0)],
        "neighbours": {"a": neighbours},
    }
    base.update(kw)
    return RankInput(**base)


def rule(rule_id: str, kind: str, **kw: Any) -> Rule:
    return Rule.model_validate({"id": rule_id, "kind": kind, **kw})


# --- co-visitation scoring ------------------------------------------------------------------


def test_covisitation_orders_by_weight_and_names_the_anchor() -> None:
    ranking = rank(one_anchor([("b", 10.0), ("c", 5.0), ("d", 1.0)]), CFG)
    assert [i.item_id for i in ranking.items] == ["b", "c", "d"]
    assert ranking.stage is Stage.NONE
    assert all(i.reasons == ("co-viewed with a",) for i in ranking.items)
    scores = [i.score for i in ranking.items]
    assert scores == sorted(scores, reverse=True)
    assert math.isclose(scores[0], 10.0 / 16.0)


def test_scores_sum_over_anchors_with_their_weights() -> None:
    inp = RankInput(
        k=3,
        now=NOW,
        anchors=[Anchor("a", 1.0), Anchor("x", 0.5)],
        neighbours={"a": [("b", 1.0), ("c", 1.0)], "x": [("c", 1.0)]},
    )
    ranking = rank(inp, CFG)
    assert [i.item_id for i in ranking.items] == ["c", "b"]
    assert ranking.items[0].reasons == ("co-viewed with a", "co-viewed with x")
    assert math.isclose(ranking.items[0].score, 0.5 + 0.5)


def test_row_normalisation_stops_a_heavy_anchor_dominating() -> None:
    inp = RankInput(
        k=3,
        now=NOW,
        anchors=[Anchor("a", 1.0), Anchor("b", 1.0)],
        neighbours={"a": [("x", 1000.0), ("y", 1000.0)], "b": [("z", 1.0)]},
    )
    assert ids(inp)[0] == "z"
    assert ids(inp, CFG.with_overrides({"normalisation": "none"}))[-1] == "z"


def test_popularity_exponent_promotes_less_popular_neighbours() -> None:
    pop = Popularity.of([("b", 100.0), ("c", 1.0)])
    inp = one_anchor([("b", 10.0), ("c", 8.0)], global_popularity=pop)
    assert ids(inp) == ["b", "c"]
    assert ids(inp, CFG.with_overrides({"popularity_exponent": 1.0})) == ["c", "b"]


def test_items_outside_the_popularity_list_take_its_floor() -> None:
    pop = Popularity.of([("b", 100.0), ("p", 10.0)])
    inp = one_anchor([("b", 10.0), ("c", 9.0)], global_popularity=pop)
    config = CFG.with_overrides({"popularity_exponent": 1.0})
    scores = {i.item_id: i.score for i in rank(inp, config).items if i.stage is Stage.NONE}
    assert math.isclose(scores["c"], 9.0 / 19.0 / (10.0 / 100.0))
    assert math.isclose(scores["b"], 10.0 / 19.0)


def test_self_loops_and_bad_weights_are_ignored() -> None:
    inp = one_anchor([("a", 50.0), ("b", float("nan")), ("c", -1.0), ("d", 1.0)])
    assert ids(inp) == ["d"]


# --- anchors --------------------------------------------------------------------------------


def test_anchor_weights_decay_with_position_and_age_and_keep_the_heaviest() -> None:
    config = RankerConfig(max_anchors=3, anchor_decay_s=100.0, anchor_position_decay=0.5)
    recent = [(NOW, "r1"), (NOW - 100.0, "r2"), (NOW - 10.0, "r1"), (NOW, "r3"), (NOW, "r4")]
    anchors = anchor_weights(recent, ["e"], now=NOW, config=config)
    assert [a.item_id for a in anchors] == ["e", "r1", "r2"]
    assert anchors[0].weight == 1.0
    assert anchors[1].weight == 1.0
    assert math.isclose(anchors[2].weight, 0.5 * math.exp(-1.0))


def test_anchor_ages_are_measured_from_the_users_newest_event_not_the_wall_clock() -> None:
    config = RankerConfig(max_anchors=3, anchor_decay_s=100.0, anchor_position_decay=1.0)
    history = [(0.0, "newest"), (-100.0, "older")]
    in_2014 = [(1_400_000_000.0 + ts, item) for ts, item in history]
    live = [(NOW + ts, item) for ts, item in history]
    replayed = anchor_weights(in_2014, [], now=NOW, config=config)
    assert replayed == anchor_weights(live, [], now=NOW, config=config)
    assert [a.weight for a in replayed] == [1.0, math.exp(-1.0)]


def test_future_timestamps_count_as_age_zero() -> None:
    anchors = anchor_weights([(NOW + 50, "x")], [], now=NOW, config=RankerConfig())
    assert anchors == [Anchor("x", 1.0)]


# --- filters --------------------------------------------------------------------------------


def test_seen_excluded_unavailable_and_blocked_never_appear() -> None:
    neighbours = [(x, float(10 - n)) for n, x in enumerate("bcdefgh")]
    pop = Popularity.of([(x, 1.0) for x in "bcdefgh"])
    inp = one_anchor(
        neighbours,
        k=10,
        seen=frozenset({"b"}),
        exclude=frozenset({"c"}),
        unavailable=frozenset({"d"}),
        categories={"e": ("shoes",), "f": ("hats", "sale")},
        rules=[rule("r1", "block", item_id="g"), rule("r2", "block", category="shoes")],
        segment_popularity=pop,
        global_popularity=pop,
        last_known=pop,
    )
    assert ids(inp) == ["f", "h"]


def test_exclude_seen_false_keeps_seen_items() -> None:
    inp = one_anchor([("b", 2.0), ("c", 1.0)], seen=frozenset({"b"}))
    assert ids(inp) == ["c"]
    assert ids(inp, CFG.with_overrides({"exclude_seen": False})) == ["b", "c"]


def test_seen_filter_is_relaxed_rather_than_answer_empty() -> None:
    pop = Popularity.of([("b", 3.0), ("c", 2.0)])
    inp = RankInput(k=2, now=NOW, global_popularity=pop, seen=frozenset({"b", "c"}))
    ranking = rank(inp, CFG)
    assert [i.item_id for i in ranking.items] == ["b", "c"]
    assert ranking.stage is Stage.GLOBAL_POPULARITY


def test_hard_filters_are_never_relaxed() -> None:
    pop = Popularity.of([("b", 3.0)])
    inp = RankInput(
        k=2, now=NOW, global_popularity=pop, exclude=frozenset({"b"}), seen=frozenset({"c"})
    )
    ranking = rank(inp, CFG)
    assert ranking.items == ()
    assert ranking.stage is Stage.LAST_KNOWN


# --- rules ----------------------------------------------------------------------------------


def test_pin_puts_the_item_at_its_position() -> None:
    inp = one_anchor(
        [("b", 3.0), ("c", 2.0), ("d", 1.0)],
        rules=[
            rule("p1", "pin", item_id="z", position=1),
            rule("p2", "pin", item_id="d", position=2),
        ],
    )
    ranking = rank(inp, CFG)
    assert [i.item_id for i in ranking.items] == ["z", "d", "b"]
    assert ranking.items[0].reasons == ("pinned by rule p1",)
    assert ranking.items[1].reasons == ("pinned by rule p2", "co-viewed with a")
    scores = [i.score for i in ranking.items]
    assert scores == sorted(scores, reverse=True)
    assert ranking.stage is Stage.NONE


def test_pin_beyond_the_list_is_appended_and_seen_does_not_stop_it() -> None:
    inp = one_anchor(
        [("b", 3.0)], k=5, seen=frozenset({"z"}), rules=[rule("p", "pin", item_id="z", position=4)]
    )
    assert ids(inp) == ["b", "z"]


def test_block_exclude_and_unavailable_beat_a_pin() -> None:
    rules = [
        rule("p1", "pin", item_id="x", position=1),
        rule("p2", "pin", item_id="y", position=1),
        rule("p3", "pin", item_id="z", position=1),
        rule("b1", "block", item_id="x"),
    ]
    inp = one_anchor(
        [("b", 1.0)], rules=rules, exclude=frozenset({"y"}), unavailable=frozenset({"z"})
    )
    assert ids(inp) == ["b"]


def test_boost_reorders_and_says_so() -> None:
    inp = one_anchor(
        [("b", 3.0), ("c", 2.0), ("d", 1.0)],
        categories={"d": ("sale",)},
        rules=[
            rule("x1", "boost", item_id="c", factor=2.0),
            rule("x2", "boost", category="sale", factor=10.0),
        ],
    )
    ranking = rank(inp, CFG)
    assert [i.item_id for i in ranking.items] == ["d", "c", "b"]
    assert ranking.items[0].reasons == ("co-viewed with a", "boosted by rule x2")
    assert ranking.items[1].reasons == ("co-viewed with a", "boosted by rule x1")


def test_boost_can_lift_a_backfill_item_over_personal_ones() -> None:
    pop = Popularity.of([("p", 1.0)])
    inp = one_anchor(
        [("b", 1.0)], global_popularity=pop, rules=[rule("x", "boost", item_id="p", factor=100.0)]
    )
    assert ids(inp) == ["p", "b"]


@pytest.mark.parametrize(
    "window",
    [
        {"valid_until": NOW - 1},
        {"valid_from": NOW + 60},
        {"valid_from": "2001-01-01T00:00:00Z", "valid_until": datetime.fromtimestamp(NOW, UTC)},
    ],
)
def test_rules_outside_their_validity_have_no_effect(window: dict[str, Any]) -> None:
    rules = [
        rule("p", "pin", item_id="z", position=1, **window),
        rule("b", "block", item_id="b", **window),
        rule("x", "boost", item_id="c", factor=100.0, **window),
    ]
    inp = one_anchor([("b", 3.0), ("c", 2.0)], rules=rules)
    assert ids(inp) == ["b", "c"]


def test_rule_valid_now_applies() -> None:
    rules = [rule("b", "block", item_id="b", valid_from=NOW - 10, valid_until=NOW + 10)]
    assert ids(one_anchor([("b", 3.0), ("c", 2.0)], rules=rules)) == ["c"]


@pytest.mark.parametrize(
    ("scope", "applies"),
    [
        ({"tenant": "shop1"}, True),
        ({"tenant": "shop2"}, False),
        ({"surface": "pdp"}, True),
        ({"surface": "home"}, False),
        ({"tenant": "shop1", "surface": "cart"}, False),
        ({}, True),
    ],
)
def test_rules_are_scoped_by_tenant_and_surface(scope: dict[str, str], applies: bool) -> None:
    rules = [rule("b", "block", item_id="b", **scope)]
    inp = one_anchor([("b", 3.0), ("c", 2.0)], rules=rules, tenant="shop1", surface="pdp")
    assert ("b" not in ids(inp)) is applies


# --- diversity ------------------------------------------------------------------------------


def test_category_cap_limits_one_category_in_the_top_k() -> None:
    neighbours = [("s1", 9.0), ("s2", 8.0), ("s3", 7.0), ("h1", 6.0), ("n1", 5.0)]
    cats = {"s1": ("shoes",), "s2": ("shoes",), "s3": ("shoes",), "h1": ("hats",)}
    inp = one_anchor(neighbours, k=4, categories=cats)
    capped = CFG.with_overrides({"max_category_share": 0.5})
    assert ids(inp, capped) == ["s1", "s2", "h1", "n1"]
    assert ids(inp) == ["s1", "s2", "s3", "h1"]


def test_category_cap_gives_way_when_there_are_too_few_items() -> None:
    cats = {x: ("shoes",) for x in ("s1", "s2", "s3")}
    inp = one_anchor([("s1", 3.0), ("s2", 2.0), ("s3", 1.0)], k=3, categories=cats)
    assert ids(inp, CFG.with_overrides({"max_category_share": 0.34})) == ["s1", "s2", "s3"]


# --- backfill and stages --------------------------------------------------------------------


def test_backfill_order_segment_then_global_then_last_known() -> None:
    inp = RankInput(
        k=5,
        now=NOW,
        anchors=[Anchor("a", 1.0)],
        neighbours={"a": [("p", 1.0)]},
        segment_popularity=Popularity.of([("s1", 5.0), ("s2", 1.0)]),
        global_popularity=Popularity.of([("g1", 100.0), ("s1", 50.0)]),
        last_known=Popularity.of([("l1", 1000.0), ("g1", 9.0)]),
        tenant="shop",
        surface="home",
    )
    ranking = rank(inp, CFG)
    assert [i.item_id for i in ranking.items] == ["p", "s1", "s2", "g1", "l1"]
    assert [i.stage for i in ranking.items] == [
        Stage.NONE,
        Stage.SEGMENT_POPULARITY,
        Stage.SEGMENT_POPULARITY,
        Stage.GLOBAL_POPULARITY,
        Stage.LAST_KNOWN,
    ]
    assert ranking.items[1].reasons == ("trending in shop/home",)
    assert ranking.items[3].reasons == ("popular",)
    assert ranking.items[4].reasons == ("popular (last known)",)
    assert ranking.stage is Stage.LAST_KNOWN


@pytest.mark.parametrize(
    ("segment", "global_", "expected"),
    [
        ([("s", 1.0)], [("g", 1.0)], Stage.SEGMENT_POPULARITY),
        ([], [("g", 1.0)], Stage.GLOBAL_POPULARITY),
        ([], [], Stage.LAST_KNOWN),
    ],
)
def test_stage_is_the_deepest_source_used(
    segment: list[tuple[str, float]], global_: list[tuple[str, float]], expected: Stage
) -> None:
    inp = RankInput(
        k=1,
        now=NOW,
        segment_popularity=Popularity.of(segment),
        global_popularity=Popularity.of(global_),
        last_known=Popularity.of([("l", 1.0)]),
    )
    ranking = rank(inp, CFG)
    assert len(ranking.items) == 1
    assert ranking.stage is expected


def test_enough_personal_candidates_need_no_backfill() -> None:
    neighbours = [(f"n{i}", float(100 - i)) for i in range(40)]
    inp = one_anchor(neighbours, k=10, global_popularity=Popularity.of([("g", 1.0)]))
    ranking = rank(inp, CFG)
    assert ranking.stage is Stage.NONE
    assert len(ranking.items) == 10


@pytest.mark.parametrize("k", [1, 3, 10])
def test_never_empty_while_any_item_is_known(k: int) -> None:
    inp = RankInput(
        k=k, now=NOW, last_known=Popularity.of([("only", 1.0)]), seen=frozenset({"only"})
    )
    assert ids(inp) == ["only"]


def test_nothing_known_gives_an_empty_ranking() -> None:
    ranking = rank(RankInput(k=5, now=NOW), CFG)
    assert ranking.items == ()


def test_demoted_items_drop_below_others() -> None:
    inp = one_anchor([("b", 3.0), ("c", 2.0)], demoted=frozenset({"b"}))
    assert ids(inp, CFG.with_overrides({"demote_factor": 0.1})) == ["c", "b"]


def test_k_limits_the_answer() -> None:
    inp = one_anchor([(f"n{i}", float(10 - i)) for i in range(8)], k=2)
    assert ids(inp) == ["n0", "n1"]


# --- config ---------------------------------------------------------------------------------


def test_config_overrides_are_validated() -> None:
    assert CFG.with_overrides({"max_anchors": 3}).max_anchors == 3
    with pytest.raises(ValueError, match="unknown ranker parameter"):
        CFG.with_overrides({"nope": 1})
    with pytest.raises(ValueError, match="max_anchors"):
        CFG.with_overrides({"max_anchors": 0})
    with pytest.raises(ValueError, match="normalisation"):
        CFG.with_overrides({"normalisation": "cosine"})
