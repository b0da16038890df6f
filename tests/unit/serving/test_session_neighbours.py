"""Known-answer tests of the session-neighbour source (serving.session_neighbours) and its
blend in the ranker, on a tiny hand-computed log.

The log: session s1 viewed A, B, C; s2 viewed B, D; s3 viewed A, E (so the session indexes,
newest first, are sn(A) = [s3, s1] and sn(B) = [s2, s1]). The request viewed A then B, so
its anchors, newest first, are [B, A]: L = 2, w_B = 2/2/2 = 0.5, w_A = 1/2/2 = 0.25.

* sim(s1) = 0.5 + 0.25 = 0.75 (step 1: shares B), sim(s2) = 0.5 (step 1), sim(s3) = 0.25
  (step 2: shares only A, the second anchor).
* s(A) = 0.75 + 0.25/2 = 0.875, s(B) = 0.75 + 0.5 = 1.25, s(C) = 0.75, s(D) = 0.5,
  s(E) = 0.125; divided by 1.25: B 1, A 0.7, C 0.6, D 0.4, E 0.1.
"""

from __future__ import annotations

import pytest

from serving.config import RankerConfig
from serving.ranker import Anchor, RankInput, rank
from serving.session_neighbours import REASON, Neighbour, item_scores, nearest

INDEX = {"A": ["s3", "s1"], "B": ["s2", "s1"]}
ITEMS = {"s1": ["C", "B", "A"], "s2": ["D", "B"], "s3": ["E", "A"]}
ANCHORS = ["B", "A"]


def test_similarity_is_the_position_weighted_overlap() -> None:
    assert nearest(ANCHORS, INDEX, exclude=None, n=10) == [
        Neighbour("s1", 0.75, 1),
        Neighbour("s2", 0.5, 1),
        Neighbour("s3", 0.25, 2),
    ]


def test_item_scores_by_hand() -> None:
    scores = item_scores(nearest(ANCHORS, INDEX, exclude=None, n=10), ITEMS)
    assert scores == pytest.approx({"B": 1.0, "A": 0.7, "C": 0.6, "D": 0.4, "E": 0.1})


def test_only_the_n_nearest_count() -> None:
    scores = item_scores(nearest(ANCHORS, INDEX, exclude=None, n=2), ITEMS)
    # s3 dropped: A = 0.75, B = 1.25, C = 0.75, D = 0.5 over 1.25
    assert scores == pytest.approx({"B": 1.0, "A": 0.6, "C": 0.6, "D": 0.4})


def test_the_requesting_user_is_not_its_own_neighbour() -> None:
    index = {"A": ["u", "s3", "s1"], "B": ["u", "s2", "s1"]}
    assert [v.user_id for v in nearest(ANCHORS, index, exclude="u", n=10)] == ["s1", "s2", "s3"]


def test_ties_go_to_the_more_recent_neighbour_then_the_id() -> None:
    index = {"B": ["s9", "s2", "s5"]}  # all three share only B: equal similarity
    assert [v.user_id for v in nearest(["B"], index, exclude=None, n=2)] == ["s9", "s2"]


def test_repeats_in_a_neighbour_list_count_once() -> None:
    scores = item_scores([Neighbour("s1", 0.5, 1)], {"s1": ["A", "A", "B"]})
    assert scores == {"A": 1.0, "B": 1.0}


def test_nothing_in_nothing_out() -> None:
    assert nearest([], INDEX, exclude=None, n=5) == []
    assert nearest(["Z"], INDEX, exclude=None, n=5) == []
    assert item_scores([Neighbour("s1", 1.0, 1)], {}) == {}


def _input(session_scores: dict[str, float]) -> RankInput:
    return RankInput(
        k=3,
        now=0.0,
        anchors=[Anchor("a", 1.0)],
        neighbours={"a": [("x", 3.0), ("y", 1.0)]},  # row-normalised: x 0.75, y 0.25
        session_scores=session_scores,
    )


def test_blend_weighs_session_scores_against_covisitation() -> None:
    config = RankerConfig(popularity_exponent=0.0, max_category_share=1.0, session_blend=0.5)
    ranking = rank(_input({"z": 1.0, "y": 0.5}), config)
    # x: 0.5·0.75 = 0.375; y: 0.5·0.25 + 0.5·0.75·0.5 = 0.3125; z: 0.5·0.75·1 = 0.375
    got = {item.item_id: item.score for item in ranking.items}
    assert got == pytest.approx({"x": 0.375, "y": 0.3125, "z": 0.375})
    reasons = {item.item_id: item.reasons for item in ranking.items}
    assert reasons["z"] == (REASON,)
    assert reasons["y"] == ("co-viewed with a", REASON)
    assert reasons["x"] == ("co-viewed with a",)


def test_blend_zero_ignores_session_scores() -> None:
    config = RankerConfig(popularity_exponent=0.0, max_category_share=1.0)
    assert config.session_blend == 0.0
    ranking = rank(_input({"z": 1.0}), config)
    assert [(i.item_id, i.score) for i in ranking.items[:2]] == [("x", 0.75), ("y", 0.25)]
    assert all(REASON not in item.reasons for item in ranking.items)
