"""Bandit allocation of experiment variants: Thompson shares, floors, stickiness (issue 20)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import numpy as np
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError
from scipy import integrate, stats

from core.errors import UnavailableError
from schemas.controls import KillSwitch
from schemas.keyspace import Keyspace
from schemas.rules import ExperimentConfig
from serving.bandit import ArmCounts, BanditPrior, arm_counts, prob_best, thompson_shares
from serving.config import RankerConfig
from serving.config_versions import only_variant
from serving.controls import Controls
from serving.ranker import Stage
from serving.recommender import Recommender
from serving.shared_state import BanditSettings, SharedState
from serving.state_reader import StateReader
from tests.unit.serving.test_recommender import CTX, NOW, seed

KEYS = Keyspace("ut")
FLAT = BanditPrior(1.0, 1.0)


def bandit_config(min_share: float = 0.1, arms: tuple[str, ...] = ("a", "b")) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": "bx",
            "allocation": "bandit",
            "min_share": min_share,
            "variants": [{"name": n, "share": 1.0 / len(arms)} for n in arms],
        }
    )


def test_arm_counts_sum_surfaces_and_skip_other_variants() -> None:
    counters = {
        "home|a|imp": 100.0,
        "pdp|a|imp": 50.0,
        "home|a|clk": 7.0,
        "home|b|imp": 10.0,
        "home|b|clk": 12.0,  # more clicks than impressions (late joins): capped
        "home|other|imp": 999.0,
        "garbage": 1.0,
    }
    assert arm_counts(counters, ["a", "b", "c"]) == {
        "a": ArmCounts(150.0, 7.0),
        "b": ArmCounts(10.0, 10.0),
        "c": ArmCounts(0.0, 0.0),
    }


def test_prob_best_matches_the_exact_posterior_probability() -> None:
    counts = {"a": ArmCounts(200.0, 10.0), "b": ArmCounts(200.0, 16.0)}
    a, b = stats.beta(11, 191), stats.beta(17, 185)
    exact, _ = integrate.quad(lambda x: b.pdf(x) * a.cdf(x), 0.0, 1.0)  # P(b > a)
    draws = 40_000
    got = prob_best(counts, prior=FLAT, draws=draws, rng=np.random.default_rng(7))
    sd = (exact * (1 - exact) / draws) ** 0.5
    assert abs(got["b"] - exact) < 4 * sd
    assert got["a"] + got["b"] == pytest.approx(1.0)


@pytest.mark.parametrize("min_share", [0.0, 0.1, 0.3])
def test_min_share_is_respected_and_shares_sum_to_one(min_share: float) -> None:
    counts = {
        "a": ArmCounts(5000.0, 100.0),
        "b": ArmCounts(5000.0, 400.0),
        "c": ArmCounts(5000.0, 90.0),
    }
    shares = thompson_shares(counts, min_share=min_share, prior=FLAT, draws=5000)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert min(shares.values()) >= min_share - 1e-12
    assert shares["b"] == pytest.approx(1.0 - 2 * min_share, abs=1e-3)  # b is surely best


def test_no_evidence_splits_evenly_and_is_the_same_on_every_server() -> None:
    counts = {"a": ArmCounts(0.0, 0.0), "b": ArmCounts(0.0, 0.0)}
    first = thompson_shares(counts, min_share=0.1, prior=FLAT, draws=20_000)
    assert first["a"] == pytest.approx(0.5, abs=0.02)
    # seeded from the counts: another process with the same counts computes the same shares
    assert thompson_shares(counts, min_share=0.1, prior=FLAT, draws=20_000) == first


def test_the_better_arm_gets_more_traffic_in_a_seeded_simulation() -> None:
    """Rounds of 200 new users: allocate by the shares, click with the true CTR, recount.

    Over 20 seeded runs the better arm (CTR 0.08 vs 0.05) must get more users in every run
    and, on average, well over half (a sign test: 20/20 by chance under no preference has
    probability 2**-20); the worse arm keeps at least its 10 % floor in every round.
    """
    true_ctr = {"a": 0.05, "b": 0.08}
    better_share = []
    for run in range(20):
        rng = np.random.default_rng(run)
        imps = dict.fromkeys(true_ctr, 0.0)
        clks = dict.fromkeys(true_ctr, 0.0)
        for _ in range(30):
            counts = {arm: ArmCounts(imps[arm], clks[arm]) for arm in true_ctr}
            shares = thompson_shares(counts, min_share=0.1, prior=FLAT, draws=2000, rng=rng)
            assert min(shares.values()) >= 0.1 - 1e-12
            users = rng.multinomial(200, [shares["a"], shares["b"]])
            for arm, n in zip(true_ctr, users.tolist(), strict=True):
                imps[arm] += n
                clks[arm] += float(rng.binomial(n, true_ctr[arm]))
        better_share.append(imps["b"] / (imps["a"] + imps["b"]))
    assert all(s > 0.5 for s in better_share), better_share
    assert float(np.mean(better_share)) > 0.7


def test_bandit_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="at least two variants"):
        ExperimentConfig.model_validate(
            {"allocation": "bandit", "variants": [{"name": "a", "share": 1.0}]}
        )
    with pytest.raises(ValidationError, match="exceeds 1"):
        bandit_config(min_share=0.3, arms=("a", "b", "c", "d"))
    with pytest.raises(ValidationError):
        bandit_config(min_share=0.6)
    assert ExperimentConfig.model_validate(
        {"variants": [{"name": "a", "share": 1.0}]}
    ).allocation == ("fixed")


def test_paused_or_promoted_bandit_is_one_fixed_arm() -> None:
    solo = only_variant(bandit_config(), "a")
    assert solo.allocation == "fixed"
    assert [v.name for v in solo.variants] == ["a"]


# --- stickiness over fakeredis ------------------------------------------------------------------
@pytest.fixture
async def fake() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.aclose()


def shared_state(client: aioredis.Redis, tmp_path: Path, cache_max: int = 1000) -> SharedState:
    return SharedState(
        StateReader(client, KEYS, retry_after_s=60.0),
        base_config=RankerConfig(),
        algo_version="t",
        last_known_file=tmp_path / "lk.json",
        bandit=BanditSettings(
            refresh_s=0.01, draws=2000, prior=FLAT, ttl_s=3600, cache_max=cache_max
        ),
    )


async def test_a_user_keeps_their_arm_while_the_allocation_moves(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    await fake.set(KEYS.experiments, bandit_config(min_share=0.1).model_dump_json())
    state = shared_state(fake, tmp_path, cache_max=0)  # every lookup goes to Redis
    assert await state.refresh()
    assert state.plan.bandit
    assert state.plan.shares["a"] == pytest.approx(0.5, abs=0.05)
    before = {f"u{i}": (await state.assign(f"u{i}")).variant for i in range(200)}
    assert set(before.values()) == {"a", "b"}
    # planted counts: b is far better → new users go to b, except a's 10 % floor
    await fake.hset(
        KEYS.surface_variant_ctr,
        mapping={"home|a|imp": 5000, "home|a|clk": 50, "home|b|imp": 5000, "home|b|clk": 500},
    )
    state._bandit_next = 0.0
    assert await state.refresh()
    assert state.plan.shares["a"] == pytest.approx(0.1, abs=1e-3)
    after = {u: (await state.assign(u)).variant for u in before}
    assert after == before  # sticky
    # the plan rebuilt for an unrelated change (run-time config) keeps the bandit's shares
    await fake.set(KEYS.runtime_config, '{"ranker_max_anchors": 4}')
    state._bandit_next = float("inf")
    assert await state.refresh()
    assert state.runtime_overrides == {"ranker_max_anchors": 4}
    assert state.plan.shares["a"] == pytest.approx(0.1, abs=1e-3)
    fresh = Counter([(await state.assign(f"new{i}")).variant for i in range(1000)])
    assert 60 <= fresh["a"] <= 140  # ~10 %
    ttl = await fake.ttl(KEYS.bandit_arm("bx", "u1"))
    assert 0 < ttl <= 3600
    # another server (fresh process cache) sees the same stored arms
    other = shared_state(fake, tmp_path)
    assert await other.refresh()
    assert {u: (await other.assign(u)).variant for u in before} == before


async def test_fixed_split_costs_no_redis_and_paused_gives_control(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    fixed = ExperimentConfig.model_validate(
        {"name": "fx", "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]}
    )
    await fake.set(KEYS.experiments, fixed.model_dump_json())
    state = shared_state(fake, tmp_path)
    assert await state.refresh()
    trips = state.reader.round_trips
    assert (await state.assign("u1")) == state.plan.assign("u1")
    assert state.reader.round_trips == trips
    assert not await fake.keys(KEYS.bandit_arm("*", "*"))
    paused = only_variant(bandit_config(), "a")
    await fake.set(KEYS.experiments, json.dumps(paused.model_dump(mode="json")))
    assert await state.refresh()
    assert {(await state.assign(f"u{i}")).variant for i in range(50)} == {"a"}


async def test_redis_down_gives_the_current_draw_without_remembering_it(
    fake: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fake.set(KEYS.experiments, bandit_config().model_dump_json())
    state = shared_state(fake, tmp_path)
    assert await state.refresh()

    async def down(*_args: object, **_kwargs: object) -> str:
        raise UnavailableError("redis: ConnectionError: down")

    monkeypatch.setattr(state.reader, "claim_arm", down)
    assignment = await state.assign("u9")
    assert assignment == state.plan.assign("u9")
    assert not state._arms


async def test_kill_switch_answers_store_no_bandit_arm(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    await seed(fake)
    await fake.set(KEYS.experiments, bandit_config().model_dump_json())
    controls = Controls()
    state = shared_state(fake, tmp_path)
    rec = Recommender(state.reader, state, request_timeout_s=1.0, controls=controls)
    assert await state.refresh()
    controls.apply([KillSwitch(tenant="shop", reason="r", who="otto", since=NOW)])
    killed = await rec.recommend(user_id="u1", session_id=None, k=2, context=CTX, now=NOW)
    assert killed.stage is Stage.KILL_SWITCH
    assert await fake.get(KEYS.bandit_arm("bx", "u1")) is None
    controls.apply([])
    served = await rec.recommend(user_id="u1", session_id=None, k=2, context=CTX, now=NOW)
    assert served.variant in {"a", "b"}
    assert await fake.get(KEYS.bandit_arm("bx", "u1")) == served.variant
