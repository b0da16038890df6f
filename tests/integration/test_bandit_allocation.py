"""Bandit allocation of experiment variants on a real server and Redis (issue 20).

An experiment created in bandit mode through Admin; planted per-variant CTR counters where one
arm is far better; new users' answers shift toward it while the other arm keeps its minimum
share; users assigned before the shift keep their arm (also across pause / resume); the
exposures say the allocation was adaptive.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.controls import EXTRA_ALLOCATION
from schemas.keyspace import Keyspace
from tests.integration.serving_support import (
    ADMIN_MD,
    admin,
    consume_exposures,
    ctx,
    recommender,
    running,
    seed,
    serving_settings,
    wait_for,
)

MIN_SHARE = 0.2


async def test_bandit_experiment_shifts_to_the_better_arm_and_keeps_users_sticky(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    cfg = serving_settings(settings, tmp_path, bandit_refresh_s=0.2, bandit_draws=4000)
    experiment = {
        "name": "bx",
        "allocation": "bandit",
        "min_share": MIN_SHARE,
        "variants": [{"name": "bx-a", "share": 0.5}, {"name": "bx-b", "share": 0.5}],
    }
    async with running(cfg) as (_server, channel):
        stub = admin(channel)
        created = await stub.CreateExperiment(
            pb.CreateExperimentRequest(config_json=json.dumps(experiment)), metadata=ADMIN_MD
        )
        assert json.loads(created.config_json)["allocation"] == "bandit"
        await stub.StartExperiment(pb.ChangeExperimentRequest(name="bx"), metadata=ADMIN_MD)

        async def variants(users: list[str]) -> dict[str, str]:
            out = {}
            for user in users:
                reply = await recommender(channel).Recommend(
                    pb.RecommendRequest(user_id=user, k=3, context=ctx(world))
                )
                out[user] = reply.variant
            return out

        early_users = [f"early-{i}" for i in range(60)]

        async def both_arms() -> dict[str, str] | None:
            got = await variants(early_users)
            return got if set(got.values()) == {"bx-a", "bx-b"} else None

        early = await wait_for(both_arms)
        assert early, "the bandit experiment never served both arms"
        reply = await recommender(channel).Recommend(
            pb.RecommendRequest(user_id="early-0", k=3, context=ctx(world))
        )
        request_id = reply.request_id

        # planted counters: bx-b clicks 12 %, bx-a 2 % (as the worker counts them)
        await redis.hset(
            keys.surface_variant_ctr,
            mapping={
                "home|bx-a|imp": 5000,
                "home|bx-a|clk": 100,
                "home|bx-b|imp": 5000,
                "home|bx-b|clk": 600,
            },
        )
        rounds = iter(range(1000))

        async def shifted() -> bool:
            r = next(rounds)
            got = Counter((await variants([f"probe-{r}-{i}" for i in range(50)])).values())
            return got["bx-b"] >= 35

        assert await wait_for(shifted, timeout_s=20.0), "allocation never moved to bx-b"
        fresh = Counter((await variants([f"new-{i}" for i in range(400)])).values())
        # expected: bx-a gets its floor (20 % = 80 of 400, sd 8), bx-b the rest
        assert 50 <= fresh["bx-a"] <= 115, fresh
        assert fresh["bx-b"] >= 285, fresh
        # a user keeps their arm after the shift
        assert await variants(early_users) == early
        ttl = await redis.ttl(keys.bandit_arm("bx", "early-0"))
        assert 0 < ttl <= settings.bandit_assignment_ttl_s

        # pause: everyone gets the control arm (the first variant); resume: arms come back
        await stub.PauseExperiment(pb.ChangeExperimentRequest(name="bx"), metadata=ADMIN_MD)

        async def control_only() -> bool:
            return set((await variants(early_users)).values()) == {"bx-a"}

        assert await wait_for(control_only)
        await stub.ResumeExperiment(pb.ChangeExperimentRequest(name="bx"), metadata=ADMIN_MD)

        async def restored() -> bool:
            return bool(await variants(early_users) == early)

        assert await wait_for(restored)

    found = await consume_exposures(settings, [request_id])
    _key, event = found[request_id]
    assert event["variant"] == early["early-0"]
    assert event["context"]["extra"][EXTRA_ALLOCATION] == "bandit"
