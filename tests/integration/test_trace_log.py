"""Decision traces in a real Redis: TTL = retention, at most trace_max kept (oldest dropped,
keys deleted), the user's index for erasure; bytes per trace measured with MEMORY USAGE."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from core.settings import Settings
from schemas.controls import DecisionTrace
from schemas.events import Context
from schemas.keyspace import Keyspace
from serving.exposure_log import PendingExposure
from serving.traces import TraceLog
from tests.integration.serving_support import wait_for


def answer(i: int, now: float, k: int = 10) -> PendingExposure:
    return PendingExposure(
        request_id=f"{i:032x}",
        user_id=f"user-{i % 7}",
        session_id=None,
        ts=now + i * 0.001,
        items=[(f"item-{i}-{r}", 10.0 - r) for r in range(k)],
        context=Context(tenant="shop", surface="home"),
        variant="control",
        algo_version="covis-v1",
        latency_ms=1.0,
        stage="none",
        degraded=False,
        reasons=[(f"co-viewed with item-{r}", "trending in shop/home") for r in range(k)],
    )


async def test_traces_are_bounded_and_expire(settings: Settings, redis: Redis) -> None:
    keys = Keyspace(settings.key_prefix)
    traces = TraceLog(redis, keys, retention_s=600, max_traces=100, capacity=1000)
    await traces.start()
    now = time.time()
    try:
        for i in range(150):
            traces.log(answer(i, now))

        async def written() -> bool:
            return traces.written == 150

        assert await wait_for(written)
    finally:
        await traces.stop()
    assert await redis.zcard(keys.traces) == 100
    assert traces.evicted == 50
    oldest, newest = answer(0, now), answer(149, now)
    assert await redis.exists(keys.trace(oldest.request_id)) == 0  # evicted with its key
    stored = await redis.get(keys.trace(newest.request_id))
    assert stored is not None
    trace = DecisionTrace.model_validate_json(stored)
    assert trace.user_id == "user-2" and len(trace.items) == 10
    assert 0 < await redis.ttl(keys.trace(newest.request_id)) <= 600
    assert newest.request_id.encode() in await redis.smembers(keys.user_traces("user-2"))
    size = await redis.memory_usage(keys.trace(newest.request_id))
    print(f"one trace at k=10 with two reasons per item: {size} bytes (MEMORY USAGE)")
    assert size is not None and size < 4096


async def test_a_full_buffer_drops_the_oldest(settings: Settings, redis: Redis) -> None:
    keys = Keyspace(settings.key_prefix)
    traces = TraceLog(redis, keys, retention_s=60, max_traces=100, capacity=5)
    for i in range(8):  # not started: nothing is written yet
        traces.log(answer(i, time.time(), k=1))
    assert traces.dropped == 3
    await traces.start()
    await traces.stop()
    assert traces.written == 5
    assert await redis.exists(keys.trace(answer(2, 0).request_id)) == 0
