"""HR@k, MRR@k, NDCG@k and coverage on tiny logs computed by hand."""

from __future__ import annotations

import math

import pytest

from evaluation.metrics import Accumulator, Scores, evaluate_lists, hit_rank


def test_hit_rank_is_one_based_and_cut_at_k() -> None:
    assert hit_rank(["a", "b", "c"], "a", 3) == 1
    assert hit_rank(["a", "b", "c"], "c", 3) == 3
    assert hit_rank(["a", "b", "c"], "c", 2) is None
    assert hit_rank(["a", "b", "c"], "z", 3) is None
    assert hit_rank([], "a", 5) is None


def test_three_predictions_by_hand() -> None:
    # target at rank 1, at rank 3, and missed; catalog of 10 items, 5 distinct recommended
    predictions = [
        (["a", "b", "c"], "a"),
        (["b", "d", "c"], "c"),
        (["e", "a", "b"], "z"),
    ]
    scores = evaluate_lists(predictions, k=3, catalog=[str(i) for i in range(10)])
    assert scores.n == 3
    assert scores.hr == pytest.approx(2 / 3)
    assert scores.mrr == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert scores.ndcg == pytest.approx((1 + 1 / math.log2(4) + 0) / 3)  # = (1 + 0.5) / 3
    assert scores.ndcg == pytest.approx(0.5)
    assert scores.coverage == pytest.approx(5 / 10)


def test_k_cuts_lists_for_every_metric() -> None:
    acc = Accumulator(k=2)
    assert acc.add(["x", "y", "t"], "t") is None  # rank 3 > k: a miss
    assert acc.add(["t", "y", "w"], "t") == 1
    scores = acc.scores(catalog_size=4)
    assert scores.hr == pytest.approx(0.5)
    assert scores.mrr == pytest.approx(0.5)
    assert scores.ndcg == pytest.approx(0.5)
    # only the first k items of each list count as recommended: x, y, t
    assert scores.coverage == pytest.approx(3 / 4)


def test_rank_two_gains() -> None:
    acc = Accumulator(k=20)
    acc.add(["a", "t"], "t")
    scores = acc.scores(catalog_size=2)
    assert scores.mrr == pytest.approx(0.5)
    assert scores.ndcg == pytest.approx(1 / math.log2(3))
    assert scores.coverage == 1.0


def test_empty_run_and_bad_k() -> None:
    assert Accumulator(k=5).scores(catalog_size=0) == Scores(0.0, 0.0, 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        Accumulator(k=0)


def test_to_dict_has_the_contract_keys() -> None:
    scores = evaluate_lists([(["a"], "a")], k=1, catalog=["a", "b"])
    assert scores.to_dict() == {"hr": 1.0, "mrr": 1.0, "ndcg": 1.0, "coverage": 0.5, "n": 1}
