"""Recommender under the controls (fakeredis): kill switch and holdback answer the baseline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest
import redis.asyncio as aioredis

from schemas.controls import BASELINE_ALGO, HOLDBACK_VARIANT, KillSwitch
from schemas.events import Context
from schemas.rules import Rule
from serving.controls import Controls, holdback_position
from serving.ranker import Stage
from serving.recommender import Recommender
from serving.shared_state import SharedState
from serving.state_reader import StateReader
from tests.unit.serving.test_recommender import CONFIG, CTX, KEYS, NOW, seed


def build(client: aioredis.Redis, tmp_path: Path, controls: Controls) -> Recommender:
    reader = StateReader(client, KEYS, retry_after_s=60.0)
    shared = SharedState(
        reader, base_config=CONFIG, algo_version="covis-test", last_known_file=tmp_path / "lk"
    )
    return Recommender(reader, shared, request_timeout_s=1.0, controls=controls)


@pytest.fixture
async def fake() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    await seed(client)
    yield client
    await client.aclose()


async def test_kill_switch_answers_the_baseline_with_rules(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    controls = Controls()
    rec = build(fake, tmp_path, controls)
    assert await rec.shared.refresh()
    personal = await rec.recommend(user_id="u1", session_id=None, k=3, context=CTX, now=NOW)
    assert personal.items[0].item_id == "c" and personal.stage is Stage.GLOBAL_POPULARITY
    controls.apply([KillSwitch(tenant="shop", reason="r", who="otto", since=NOW)])
    before = rec.reader.round_trips
    killed = await rec.recommend(user_id="u1", session_id=None, k=3, context=CTX, now=NOW)
    assert [i.item_id for i in killed.items] == ["s1", "p1", "p2"]  # segment, then global
    assert killed.stage is Stage.KILL_SWITCH
    assert (killed.variant, killed.algo_version) == ("control", BASELINE_ALGO)
    assert rec.reader.round_trips == before  # no Redis read: the segment is cached
    again = await rec.recommend(user_id="u2", session_id=None, k=2, context=CTX, now=NOW)
    assert again.stage is Stage.KILL_SWITCH and rec.reader.round_trips == before
    fresh = build(fake, tmp_path, controls)  # a server that never saw the segment
    assert await fresh.shared.refresh()
    first = fresh.reader.round_trips
    cold = await fresh.recommend(user_id="u1", session_id=None, k=3, context=CTX, now=NOW)
    assert [i.item_id for i in cold.items] == ["s1", "p1", "p2"]
    assert fresh.reader.round_trips - first == 1  # the segment's popularity, nothing personal
    block = Rule(id="no-p1", kind="block", item_id="p1")
    ruled = await rec.recommend(
        user_id="u1", session_id=None, k=3, context=CTX, now=NOW, extra_rules=(block,)
    )
    assert [i.item_id for i in ruled.items] == ["s1", "p2"]
    assert ruled.rules[-1] == block
    similar = await rec.similar_items(item_id="a", k=2, context=CTX, now=NOW)
    assert similar.stage is Stage.KILL_SWITCH and "a" not in [i.item_id for i in similar.items]
    elsewhere = await rec.recommend(
        user_id="u1", session_id=None, k=3, context=Context(tenant="t2"), now=NOW
    )
    assert elsewhere.stage is not Stage.KILL_SWITCH


async def test_holdback_units_get_the_baseline_under_their_own_variant(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    salt = next(f"s{i}" for i in range(1000) if holdback_position(f"s{i}", "shop", "u1") < 0.5)
    rec = build(fake, tmp_path, Controls(holdback_share=0.5, holdback_salt=salt))
    assert await rec.shared.refresh()
    held = await rec.recommend(user_id="u1", session_id=None, k=3, context=CTX, now=NOW)
    assert held.variant == HOLDBACK_VARIANT
    assert [i.item_id for i in held.items] == ["s1", "p1", "p2"]
    assert held.stage is Stage.GLOBAL_POPULARITY  # the baseline's own stage
    item_page = await rec.similar_items(item_id="a", k=2, context=CTX, now=NOW)
    assert item_page.variant == "control"  # no viewer: no holdback draw
