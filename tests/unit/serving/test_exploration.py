"""Thompson-sampling exploration slots (serving.exploration), and their wiring (fakeredis)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import fakeredis
import numpy as np
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from scipy import stats

from core.settings import Settings
from schemas.controls import KillSwitch
from schemas.events import Context, declared_interests
from serving.config import RankerConfig
from serving.controls import Controls, holdback_position
from serving.exploration import (
    EXPLORING_REASON,
    Arm,
    ArmTable,
    ExplorationConfig,
    choose,
    explore,
    posterior,
    prob_above,
    slot_count,
    surface_ctrs,
    worth_exploring,
)
from serving.exposure_log import PendingExposure, build_exposure
from serving.ranker import Popularity, RankedItem, Ranking, RankInput, Stage, rank
from serving.recommender import Recommender
from serving.shared_state import SharedState
from serving.state_reader import StateReader
from tests.unit.serving.test_recommender import CONFIG, CTX, KEYS, NOW, seed

CFG = ExplorationConfig(share=0.1, prior_alpha=1.0, prior_beta=19.0)


def ranking(*items: str) -> Ranking:
    return Ranking(
        tuple(
            RankedItem(i, 10.0 - n, ("popular",), Stage.GLOBAL_POPULARITY)
            for n, i in enumerate(items)
        ),
        Stage.GLOBAL_POPULARITY,
    )


@pytest.mark.parametrize(
    ("alpha", "beta", "x"), [(1, 19, 0.05), (3, 200, 0.02), (40.5, 900, 0.05), (2, 2, 0.9)]
)
def test_prob_above_matches_scipy(alpha: float, beta: float, x: float) -> None:
    assert prob_above(alpha, beta, x) == pytest.approx(stats.beta.sf(x, alpha, beta), abs=1e-9)


def test_posterior_updates_with_clicks_and_impressions() -> None:
    assert posterior(Arm("a", 0, 0), CFG) == (1.0, 19.0)
    assert posterior(Arm("a", 100, 7), CFG) == (8.0, 112.0)
    before = prob_above(*posterior(Arm("a", 10, 0), CFG), 0.05)
    after = prob_above(*posterior(Arm("a", 200, 0), CFG), 0.05)
    clicked = prob_above(*posterior(Arm("a", 200, 30), CFG), 0.05)
    assert after < before and clicked > 0.99


def test_confident_losers_and_spent_arms_are_not_explored() -> None:
    assert worth_exploring(Arm("new", 0, 0), 0.05, CFG)
    assert not worth_exploring(Arm("loser", 300, 0), 0.05, CFG)  # P(ctr > 5 %) ≈ 1e-7
    assert not worth_exploring(Arm("spent", 1000, 200), 0.05, CFG)  # max_impressions
    old = Arm("old", 0, 0, announced_ts=NOW - CFG.max_age_s - 1)
    assert worth_exploring(old, 0.05, CFG) and not worth_exploring(old, 0.05, CFG, now=NOW)
    rng = np.random.default_rng(1)
    picks = Counter(
        item
        for _ in range(500)
        for item in choose(
            ArmTable.build([Arm("loser", 300, 0), Arm("new", 0, 0)], 0.05, CFG),
            2,
            allowed=lambda _: True,
            config=CFG,
            rng=rng,
        )
    )
    assert picks == Counter({"new": 500})


def test_share_of_slots_is_respected() -> None:
    rng = np.random.default_rng(7)
    assert slot_count(10, 0.0, rng) == 0
    counts = [slot_count(5, 0.1, rng) for _ in range(4000)]
    assert set(counts) == {0, 1}
    assert sum(counts) / (4000 * 5) == pytest.approx(0.1, abs=0.01)
    arms = [Arm(f"n{i}", 0, 0) for i in range(50)]
    explored = 0
    for _ in range(2000):
        out = explore(
            ranking(*(f"p{i}" for i in range(10))),
            ArmTable.build(arms, 0.05, CFG),
            k=10,
            surface="home",
            allowed=lambda _: True,
            config=CFG,
            rng=rng,
        )
        assert len(out.items) == 10
        tail = [i for i in out.items if EXPLORING_REASON in i.reasons]
        assert len(tail) == 1 and out.items[-1] == tail[0]  # one slot of ten, the last one
        assert [i.item_id for i in out.items[:9]] == [f"p{i}" for i in range(9)]
        explored += len(tail)
    assert explored == 2000
    off = ExplorationConfig(share=0.1, share_by_surface={"pdp": 0.0})
    same = ranking("p0", "p1")
    assert (
        explore(
            same,
            ArmTable.build(arms, 0.05, off),
            k=10,
            surface="pdp",
            allowed=lambda _: True,
            config=off,
            rng=rng,
        )
        is same
    )


def test_thompson_picks_in_the_proportions_of_the_posteriors() -> None:
    """Each arm's share of picks is P(its draw is the largest), estimated independently."""
    arms = [Arm("good", 40, 8), Arm("mid", 40, 3), Arm("cold", 0, 0)]
    table = ArmTable.build(arms, 0.01, CFG)
    assert len(table) == 3
    rng = np.random.default_rng(11)
    n = 6000
    picks = Counter(
        choose(table, 1, allowed=lambda _: True, config=CFG, rng=rng)[0] for _ in range(n)
    )
    ref = random.Random(99)
    wins: Counter[str] = Counter()
    params = [(a.item_id, posterior(a, CFG)) for a in arms]
    for _ in range(40_000):
        draws = [(ref.betavariate(a, b), item) for item, (a, b) in params]
        wins[max(draws)[1]] += 1
    expected = [wins[a.item_id] / 40_000 * n for a in arms]
    observed = [picks[a.item_id] for a in arms]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    assert picks["good"] > picks["mid"]


def test_filters_exclude_blocked_unavailable_seen_and_shown_items() -> None:
    arms = [Arm(i, 0, 0) for i in ("blocked", "gone", "seen", "p0", "ok")]
    banned = {"blocked", "gone", "seen"}
    rng = np.random.default_rng(3)
    for _ in range(300):
        out = explore(
            ranking("p0", "p1"),
            ArmTable.build(arms, 0.05, CFG),
            k=2,
            surface="home",
            allowed=lambda item: item not in banned,
            config=ExplorationConfig(share=0.5),
            rng=rng,
        )
        explored = [i.item_id for i in out.items if EXPLORING_REASON in i.reasons]
        assert explored == ["ok"]
        assert [i.item_id for i in out.items] == ["p0", "ok"]


def test_surface_ctrs_add_up_variants() -> None:
    counters = {
        "home|control|imp": 100.0,
        "home|b|imp": 100.0,
        "home|control|clk": 6.0,
        "home|b|clk": 4.0,
        "home|b|pos": 9.0,
        "pdp|control|imp": 0.0,
        "join|ok": 3.0,
    }
    assert surface_ctrs(counters) == {"home": 0.05}


def test_exposure_flags_explored_items() -> None:
    pending = PendingExposure(
        request_id="r1",
        user_id="u1",
        session_id=None,
        ts=NOW,
        items=[("a", 2.0), ("n", 1.0)],
        context=CTX,
        variant="control",
        algo_version="v",
        latency_ms=1.0,
        stage="none",
        degraded=False,
        reasons=[("popular",), (EXPLORING_REASON,)],
    )
    items = build_exposure(pending).items
    assert [i.exploring for i in items] == [None, True]
    assert items[1].reasons == [EXPLORING_REASON]


# --- wiring: recommender + shared state over fakeredis --------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    await seed(client)
    await client.zadd(KEYS.new_items, {"new1": NOW - 60, "new2": NOW - 30, "loser": NOW - 90})
    await client.zadd(KEYS.item_impressions, {"loser": 500.0, "p1": 50.0})
    await client.hset(
        KEYS.surface_variant_ctr, mapping={"home|control|imp": 1000, "home|control|clk": 50}
    )
    yield client
    await client.aclose()


def build(client: aioredis.Redis, tmp_path: Path, controls: Controls) -> Recommender:
    reader = StateReader(client, KEYS, retry_after_s=60.0)
    shared = SharedState(
        reader,
        base_config=CONFIG,
        algo_version="covis-test",
        last_known_file=tmp_path / "lk",
        exploration=ExplorationConfig(share=0.5, max_impressions=1000),
    )
    return Recommender(
        reader, shared, request_timeout_s=1.0, controls=controls, rng=np.random.default_rng(5)
    )


async def test_recommender_explores_pool_items_but_not_under_controls(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    controls = Controls()
    rec = build(fake, tmp_path, controls)
    assert await rec.shared.refresh()
    assert {a.item_id for a in rec.shared.exploration_arms} == {"new1", "new2", "loser"}
    assert rec.shared.surface_ctr == {"home": 0.05}
    await fake.sadd(KEYS.unavailable_items, "new2")
    await fake.incr(KEYS.catalog_version)
    assert await rec.shared.refresh()
    explored: Counter[str] = Counter()
    for n in range(200):
        answer = await rec.recommend(user_id=f"u{n}", session_id=None, k=4, context=CTX, now=NOW)
        assert len(answer.items) <= 4
        explored.update(i.item_id for i in answer.items if EXPLORING_REASON in i.reasons)
    assert set(explored) == {"new1"}  # new2 unavailable, loser confidently below 5 %
    assert 150 <= explored["new1"] <= 250  # 0.5 · 4 = 2 slots, one eligible item
    controls.apply([KillSwitch(tenant="shop", reason="r", who="otto", since=NOW)])
    for n in range(50):
        answer = await rec.recommend(user_id=f"u{n}", session_id=None, k=4, context=CTX, now=NOW)
        assert all(EXPLORING_REASON not in i.reasons for i in answer.items)
    salt = next(f"s{i}" for i in range(1000) if holdback_position(f"s{i}", "shop", "u1") < 0.5)
    held = build(fake, tmp_path, Controls(holdback_share=0.5, holdback_salt=salt))
    assert await held.shared.refresh()
    for _ in range(50):
        answer = await held.recommend(user_id="u1", session_id=None, k=4, context=CTX, now=NOW)
        assert all(EXPLORING_REASON not in i.reasons for i in answer.items)
    other = Context(tenant="shop", surface="home")
    answer = await held.recommend(user_id="u1", session_id=None, k=4, context=other, now=NOW)
    assert answer.variant == "holdback"


# --- declared interests (new users) ---------------------------------------------------------


def test_declared_interests_parse_the_context() -> None:
    assert declared_interests(CTX) == frozenset()
    ctx = Context(extra={"interests": " shoes, ,hats,shoes "})
    assert declared_interests(ctx) == {"shoes", "hats"}


def test_backfill_ranks_popularity_within_interests_first() -> None:
    cats = {"p3": ("hats",), "p5": ("hats", "x"), "s2": ("hats",), "p1": ("shoes",)}
    inp = RankInput(
        k=4,
        now=NOW,
        segment_popularity=Popularity.of([("s1", 9.0), ("s2", 8.0)]),
        global_popularity=Popularity.of([(f"p{i}", 20.0 - i) for i in range(8)]),
        categories=cats,
        unavailable=frozenset({"p5"}),
        interests=frozenset({"hats"}),
    )
    config = RankerConfig(popularity_exponent=0.0, max_category_share=1.0)
    items = rank(inp, config).items
    assert [i.item_id for i in items] == ["s2", "p3", "s1", "p0"]
    assert items[0].reasons == ("popular in hats",)
    assert items[1].stage is Stage.GLOBAL_POPULARITY
    plain = rank(replace(inp, interests=frozenset()), config).items
    assert [i.item_id for i in plain] == ["s1", "s2", "p0", "p1"]


async def test_new_user_with_interests_gets_items_of_those_categories(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    await fake.hset(KEYS.item_categories, mapping={"p2": "hats"})
    await fake.incr(KEYS.catalog_version)
    rec = build(fake, tmp_path, Controls())
    rec.shared.exploration = ExplorationConfig(share=0.0)
    assert await rec.shared.refresh()
    hats = Context(tenant="shop", surface="home", extra={"interests": "hats"})
    answer = await rec.recommend(user_id="brand-new", session_id=None, k=2, context=hats, now=NOW)
    assert answer.items[0].item_id == "p2" and answer.items[0].reasons == ("popular in hats",)
    plain = await rec.recommend(user_id="brand-new", session_id=None, k=2, context=CTX, now=NOW)
    assert "p2" not in [i.item_id for i in plain.items]


def test_settings_bound_the_per_surface_share() -> None:
    assert Settings(exploration_share_by_surface={"pdp": 0.0}).exploration_share_by_surface == {
        "pdp": 0.0
    }
    with pytest.raises(ValidationError, match="exploration share of 'pdp'"):
        Settings(exploration_share_by_surface={"pdp": 0.9})


def test_arms_past_their_age_are_not_drawn() -> None:
    arms = [Arm("old", 0, 0, announced_ts=NOW - 10_000), Arm("young", 0, 0, announced_ts=NOW)]
    config = ExplorationConfig(max_age_s=5_000)
    table = ArmTable.build(arms, 0.05, config)
    rng = np.random.default_rng(2)
    for _ in range(200):
        assert choose(table, 2, allowed=lambda _: True, config=config, rng=rng, now=NOW) == [
            "young"
        ]
    assert len(choose(table, 2, allowed=lambda _: True, config=config, rng=rng)) == 2


async def test_items_the_user_has_seen_are_not_explored(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    await fake.zadd(KEYS.new_items, {"b": NOW - 10})  # u1 has seen b (see seed)
    rec = build(fake, tmp_path, Controls())
    assert await rec.shared.refresh()
    for _ in range(100):
        answer = await rec.recommend(user_id="u1", session_id=None, k=4, context=CTX, now=NOW)
        assert "b" not in [i.item_id for i in answer.items if EXPLORING_REASON in i.reasons]
    others: Counter[str] = Counter()
    for n in range(100):
        answer = await rec.recommend(user_id=f"v{n}", session_id=None, k=4, context=CTX, now=NOW)
        others.update(i.item_id for i in answer.items if EXPLORING_REASON in i.reasons)
    assert others["b"] > 0
