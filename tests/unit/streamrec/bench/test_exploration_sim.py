"""The pure parts of ``bench exploration``: hidden probabilities, arrivals, regret, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ConfigError
from streamrec.bench.exploration_sim import Answer, SimConfig, World, oracle_regret, summarise
from streamrec.demo.shop import Shop, ShopConfig

SMALL = SimConfig(answers=2000, items=60, users=40, categories=6, seed=3)


def test_world_is_seeded_and_probabilities_are_probabilities() -> None:
    a, b = World(SMALL), World(SMALL)
    assert np.array_equal(a.p, b.p)
    assert a.arrival == b.arrival and a.history() == b.history()
    assert a.p.shape == (40, 60)
    assert ((a.p > 0) & (a.p < 1)).all()
    other = World(SimConfig(answers=2000, items=60, users=40, categories=6, seed=4))
    assert not np.array_equal(a.p, other.p)


def test_favourite_category_is_clicked_more() -> None:
    world = World(SMALL)
    fav: list[float] = []
    rest: list[float] = []
    shop = Shop(ShopConfig(items=60, categories=6, users=40, seed=3))
    for u, user in enumerate(world.users):
        for i, item in enumerate(world.items):
            same = shop.users[user].favourite == world.category_of[item]
            (fav if same else rest).append(world.p[u, i])
    assert np.mean(fav) > 1.5 * np.mean(rest)


def test_arrivals_leave_room_and_history_only_uses_the_initial_catalog() -> None:
    world = World(SMALL)
    assert len(world.new_items) == 12  # 20 % of 60
    assert set(world.new_items).isdisjoint(world.initial)
    assert min(world.arrival.values()) >= 1
    assert max(world.arrival.values()) <= SMALL.answers - 1000
    assert {item for _, item in world.history()} <= set(world.initial)
    assert len(world.available(0)) == 48
    assert len(world.available(SMALL.answers)) == 60


def test_oracle_regret() -> None:
    p = np.array([0.5, 0.1, 0.3, 0.05])
    assert oracle_regret(p, np.array([0.5, 0.3]), k=2) == pytest.approx(0.0)
    assert oracle_regret(p, np.array([0.1, 0.05]), k=2) == pytest.approx(0.8 - 0.15)
    assert oracle_regret(p, np.array([0.1]), k=2) == pytest.approx(0.7)  # a short answer
    assert oracle_regret(np.array([]), np.array([]), k=3) == 0.0


def _answer(
    index: int, items: tuple[str, ...], clicks: int = 0, explored: tuple[str, ...] = ()
) -> Answer:
    return Answer(index, index * 0.5, items, explored, clicks, 0.1 * clicks, 1.0)


def test_summarise_a_hand_made_log() -> None:
    # catalog of 10 items; new items n1 (arrives before answer 1), n2 (before 2), n3 (before 3)
    log = [
        _answer(0, ("a", "b"), clicks=1),
        _answer(1, ("a", "n1"), explored=("n1",)),
        _answer(2, ("a", "b"), clicks=2),
        _answer(3, ("a", "n2"), explored=("n2",)),
    ]
    arrival = {"n1": 1, "n2": 2, "n3": 3, "n4": 9}  # n4 never reached: left out
    arrival_t = {"n1": 0.25, "n2": 0.75, "n3": 1.25}
    r = summarise(log, arrival, arrival_t, catalog=10, within=2)
    assert r["answers"] == 4 and r["clicks"] == 3
    assert r["clicks_per_1000"] == pytest.approx(750.0)
    assert r["regret"] == pytest.approx(4.0)
    assert r["impressions"] == 8 and r["explored_impressions"] == 2
    assert r["coverage"] == pytest.approx(4 / 10)  # a, b, n1, n2
    # head = top ceil(20 % of 10) = 2 items by impressions: a (4), b (2); tail n1, n2
    assert r["long_tail_share"] == pytest.approx(2 / 8)
    assert r["new_items"] == 3
    assert r["new_items_never_shown"] == pytest.approx(1 / 3)  # n3
    # n1 after 0 answers, n2 after 1 (both < 2); n3 unseen with 1 answer left: censored
    assert r["new_items_shown_within"] == pytest.approx(1.0)
    assert r["new_items_censored"] == 1
    assert r["first_impression_answers_p50"] == pytest.approx(0.5)
    assert r["first_impression_s_p50"] == pytest.approx((0.25 + 0.75) / 2)


def test_summarise_counts_late_and_never_shown_items_against_the_target() -> None:
    log = [_answer(i, ("a",)) for i in range(5)] + [_answer(5, ("n1",))]
    r = summarise(log, {"n1": 0, "n2": 0}, {"n1": 0.0, "n2": 0.0}, catalog=3, within=3)
    # n1 first shown 5 answers after arrival (late); n2 never, with 6 answers to go: judged
    assert r["new_items_shown_within"] == 0.0
    assert r["new_items_never_shown"] == pytest.approx(0.5)
    assert r["new_items_censored"] == 0


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        SimConfig(new_share=0.0).check()
    with pytest.raises(ConfigError):
        SimConfig(items=10, categories=12).check()
    with pytest.raises(ConfigError, match="dense matrix"):
        SimConfig(items=100_000, users=1_000).check()
