"""Recommender over fakeredis: round trips per request, fallbacks, evaluation-style use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from schemas.events import Context
from schemas.keyspace import Keyspace, segment_id
from serving.config import RankerConfig
from serving.ranker import Stage
from serving.recommender import Recommender
from serving.shared_state import SharedState, load_last_known
from serving.state_reader import StateReader

NOW = 1_700_000_000.0
KEYS = Keyspace("ut")
CTX = Context(tenant="shop", surface="home")
CONFIG = RankerConfig(popularity_exponent=0.0, max_category_share=1.0)


async def seed(client: aioredis.Redis) -> None:
    await client.zadd(KEYS.covis("a"), {"b": 5.0, "c": 3.0})
    await client.zadd(KEYS.covis("c"), {"e": 2.0})
    await client.zadd(KEYS.popularity(), {"p1": 9.0, "p2": 8.0})
    await client.zadd(KEYS.popularity(segment_id("shop", "home", "")), {"s1": 3.0})
    await client.lpush(KEYS.user_recent("u1"), f"{NOW - 10:.3f}|a")
    await client.zadd(KEYS.user_seen("u1"), {"a": NOW - 10, "b": NOW - 100})
    await client.hset(KEYS.meta, "last_write", repr(NOW - 4))


def build(client: aioredis.Redis, tmp_path: Path, config: RankerConfig = CONFIG) -> Recommender:
    reader = StateReader(client, KEYS, retry_after_s=60.0)
    shared = SharedState(
        reader,
        base_config=config,
        algo_version="covis-test",
        last_known_file=tmp_path / "last_known.json",
    )
    return Recommender(reader, shared, request_timeout_s=1.0)


@pytest.fixture
async def fake() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    await seed(client)
    yield client
    await client.aclose()


async def test_a_known_user_costs_two_round_trips(fake: aioredis.Redis, tmp_path: Path) -> None:
    rec = build(fake, tmp_path)
    assert await rec.shared.refresh()
    before = rec.reader.round_trips
    answer = await rec.recommend(user_id="u1", session_id=None, k=3, context=CTX, now=NOW)
    assert rec.reader.round_trips - before == 2
    assert [i.item_id for i in answer.items] == ["c", "s1", "p1"]  # b was seen
    assert answer.stage is Stage.GLOBAL_POPULARITY
    assert not answer.degraded
    assert answer.state_age_s == pytest.approx(4.0)
    assert (answer.variant, answer.algo_version, answer.unit) == ("control", "covis-test", "u1")


async def test_unknown_user_and_similar_items_cost_one_round_trip(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    rec = build(fake, tmp_path)
    await rec.shared.refresh()
    before = rec.reader.round_trips
    cold = await rec.recommend(user_id="new", session_id=None, k=1, context=CTX, now=NOW)
    assert [i.item_id for i in cold.items] == ["s1"]
    assert rec.reader.round_trips - before == 1
    similar = await rec.similar_items(item_id="a", k=2, context=CTX, now=NOW)
    assert [i.item_id for i in similar.items] == ["b", "c"]
    assert rec.reader.round_trips - before == 2


async def test_exclude_seen_off_for_session_evaluation(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    rec = build(fake, tmp_path, CONFIG.with_overrides({"exclude_seen": False}))
    await rec.shared.refresh()
    answer = await rec.recommend(
        user_id="u1", session_id=None, k=2, context=CTX, anchors=["c"], now=NOW
    )
    assert [i.item_id for i in answer.items] == ["e", "b"]  # b was seen: kept


async def test_redis_errors_fall_back_and_open_the_circuit(
    fake: aioredis.Redis, tmp_path: Path
) -> None:
    warm = build(fake, tmp_path)
    await warm.shared.refresh()
    await warm.shared.stop()  # saves the last-known list
    assert [i for i, _ in load_last_known(tmp_path / "last_known.json").items] == ["p1", "p2"]

    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    rec = build(dead, tmp_path)
    await rec.shared.start()  # refresh fails; the last-known file is loaded
    try:
        answer = await rec.recommend(user_id="u1", session_id=None, k=2, context=CTX, now=NOW)
        assert answer.degraded
        assert [i.item_id for i in answer.items] == ["p1", "p2"]
        assert answer.stage is Stage.LAST_KNOWN
        assert rec.reader.errors >= 1
        trips = rec.reader.round_trips
        again = await rec.recommend(user_id="u1", session_id=None, k=2, context=CTX, now=NOW)
        assert again.degraded and rec.reader.round_trips == trips  # circuit open: no call
    finally:
        await rec.aclose()


async def test_a_passed_deadline_skips_redis(fake: aioredis.Redis, tmp_path: Path) -> None:
    rec = build(fake, tmp_path)
    await rec.shared.refresh()
    trips = rec.reader.round_trips
    answer = await rec.recommend(
        user_id="u1", session_id=None, k=1, context=CTX, now=NOW, deadline=0.0
    )
    assert answer.degraded and answer.items
    assert rec.reader.round_trips == trips


async def test_bad_calls_raise(fake: aioredis.Redis, tmp_path: Path) -> None:
    rec = build(fake, tmp_path)
    with pytest.raises(ValueError, match="user_id or a session_id"):
        await rec.recommend(user_id=None, session_id=None, k=1, context=CTX)
    with pytest.raises(ValueError, match="k must be"):
        await rec.recommend(user_id="u", session_id=None, k=0, context=CTX)
    with pytest.raises(ValueError, match="item_id"):
        await rec.similar_items(item_id="", k=1, context=CTX)
