"""Exploration end to end (issue 20) on the real broker, Redis, worker and gRPC server.

An item announced on the items topic, never viewed, joins the new-item pool at its catalog
time and is shown as ``exploring`` in a share of answers (flagged in its exposure); never under
the kill switch; after many impressions with no click (exposures joined by the worker) it is
confidently below the surface's CTR and is explored no more.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.events import EXPLORING_REASON
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from serving import metrics
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
from tests.worker_support import produce, start_worker, stop_worker, wait_applied

pytestmark = pytest.mark.timeout(240)

K = 5
SHARE = 0.2  # one slot of five per answer


def explored(reply: pb.RecommendResponse) -> list[str]:
    return [i.item_id for i in reply.items if EXPLORING_REASON in i.reasons]


def served_items(slot: str) -> float:
    """streamrec_serving_items_total of this process's servers for one slot kind, all surfaces."""
    return sum(
        sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == "streamrec_serving_items"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("slot") == slot
    )


async def test_new_catalog_item_is_explored_flagged_and_dropped(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    await redis.hdel(keys.meta, "t0")  # seed's landmark 0 is not the worker's: let it choose
    # the surface's CTR: 5 % (the prior's mean); 'fresh' will be judged against it
    await redis.hset(
        keys.surface_variant_ctr, mapping={"home|control|imp": 10_000, "home|control|clk": 500}
    )
    announced = time.time()
    item = orjson.dumps(
        {"item_id": "fresh", "categories": ["shoes"], "available": True, "ts": announced}
    )
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        await produce(settings, Topic.ITEMS, [(b"fresh", item)])
        await wait_applied(settings, redis, [Topic.ITEMS], procs=[worker])
        assert await redis.zrange(keys.new_items, 0, -1) == [b"fresh"]
        assert await redis.zscore(keys.new_items, "fresh") == pytest.approx(announced)

        served = serving_settings(settings, tmp_path, exploration_share=SHARE)
        async with running(served) as (_server, channel):
            stub = recommender(channel)

            async def ask(n: int, prefix: str) -> list[pb.RecommendResponse]:
                return [
                    await stub.Recommend(
                        pb.RecommendRequest(user_id=f"{prefix}{i}", k=K, context=ctx(world))
                    )
                    for i in range(n)
                ]

            async def explores() -> bool:
                return any(explored(r) for r in await ask(5, "probe"))

            assert await wait_for(explores)
            before = {slot: served_items(slot) for slot in ("explored", "ranked")}
            answers = await ask(100, "user")
            # the exploration share on /metrics (the dashboard's panel): 1 of K per answer
            assert served_items("explored") - before["explored"] == 100
            assert served_items("ranked") - before["ranked"] == 100 * (K - 1)
            shown = [r for r in answers if explored(r)]
            # one eligible item, one slot per answer: every answer explores it, in the last slot
            assert len(shown) == 100
            assert all(explored(r) == ["fresh"] and r.items[-1].item_id == "fresh" for r in shown)
            assert all(len(r.items) == K for r in answers)
            exposures = await consume_exposures(served, [r.request_id for r in shown[:3]])
            for _key, event in exposures.values():
                last = event["items"][-1]
                assert last["item_id"] == "fresh" and last["exploring"] is True
                assert last["reasons"] == [EXPLORING_REASON]
                assert all("exploring" not in i for i in event["items"][:-1])

            # under the kill switch: the baseline, never an explored item
            await admin(channel).SetKillSwitch(
                pb.SetKillSwitchRequest(on=True, tenant=world.tenant, reason="test"),
                metadata=ADMIN_MD,
            )

            async def killed() -> bool:
                reply = (await ask(1, "k"))[0]
                return reply.fallback_stage == pb.FALLBACK_STAGE_KILL_SWITCH

            assert await wait_for(killed)
            assert not any(explored(r) for r in await ask(50, "killed"))
            await admin(channel).SetKillSwitch(
                pb.SetKillSwitchRequest(on=False, tenant=world.tenant, reason="test over"),
                metadata=ADMIN_MD,
            )
            assert await wait_for(explores)

            # planted: 300 impressions without a click, joined by the worker
            exposures_out = [
                (
                    f"x{i}".encode(),
                    orjson.dumps(
                        {
                            "request_id": f"planted-{i}",
                            "user_id": f"x{i}",
                            "ts": announced + 1,
                            "items": [{"item_id": "fresh", "rank": 1}],
                            "context": {"tenant": world.tenant, "surface": world.surface},
                        }
                    ),
                )
                for i in range(300)
            ]
            await produce(settings, Topic.EXPOSURES, exposures_out)
            await wait_applied(settings, redis, [Topic.EXPOSURES], procs=[worker])
            assert (await redis.zscore(keys.item_impressions, "fresh") or 0) >= 300

            async def dropped() -> bool:
                return not any(explored(r) for r in await ask(5, "after"))

            assert await wait_for(dropped)
            assert not any(explored(r) for r in await ask(50, "later"))
    finally:
        stop_worker(worker)


async def test_brand_new_user_with_declared_interests_gets_those_categories(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    await redis.hset(keys.item_categories, mapping={"p7": "hats", "p12": "hats", "p3": "bags"})
    await redis.incr(keys.catalog_version)
    served = serving_settings(settings, tmp_path, exploration_share=0.0)
    async with running(served) as (_server, channel):
        stub = recommender(channel)
        context = pb.Context(
            tenant=world.tenant, surface=world.surface, extra={"interests": "hats"}
        )

        async def first_answer() -> pb.RecommendResponse | None:
            reply = await stub.Recommend(
                pb.RecommendRequest(user_id="never-seen", k=4, context=context)
            )
            return reply if reply.items and reply.items[0].item_id == "p7" else None

        reply = await wait_for(first_answer)  # the server loads the catalog on its first refresh
        assert reply is not None
        assert [i.item_id for i in reply.items[:2]] == ["p7", "p12"]
        assert list(reply.items[0].reasons) == ["popular in hats"]
        plain = await stub.Recommend(
            pb.RecommendRequest(user_id="never-seen-2", k=4, context=ctx(world))
        )
        assert [i.item_id for i in plain.items] == ["s0", "s1", "s2", "s3"]
