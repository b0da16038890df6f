"""The server's in-process co-visitation rows stay exact through Redis invalidations."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from schemas.keyspace import Keyspace
from serving import metrics
from serving.state_reader import StateReader
from streamrec.settings import Settings
from tests.integration.serving_support import RedisProcess


def in_(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def _read_until(
    reader: StateReader, anchor: str, expected: list[tuple[str, float]], seconds: float = 2.0
) -> int:
    """Read ``anchor``'s row until it equals ``expected``; the number of reads it took."""
    end = asyncio.get_running_loop().time() + seconds
    reads = 0
    while True:
        reads += 1
        rows = await reader.read_neighbours([anchor], 10, deadline=in_(2.0))
        if list(rows[anchor]) == expected:
            return reads
        assert asyncio.get_running_loop().time() < end, f"still {rows[anchor]} after {reads}"
        await asyncio.sleep(0.001)


async def test_a_cached_row_is_replaced_as_soon_as_redis_changes_it(
    settings: Settings, redis: Redis
) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.zadd(keys.covis("a"), {"b": 2.0, "c": 1.0})
    await redis.zadd(keys.covis("x"), {"y": 5.0})
    reader = await StateReader.connect(settings)
    try:
        cache = reader.neighbour_cache
        assert cache is not None
        first = await reader.read_neighbours(["a", "x"], 10, deadline=in_(2.0))
        assert reader.wire is not None and reader.wire.tracking
        trips = reader.round_trips
        again = await reader.read_neighbours(["a", "x"], 10, deadline=in_(2.0))
        assert again == first and reader.round_trips == trips  # both rows from the cache
        assert again["a"] is first["a"]  # the same shared tuple
        assert list(again["a"]) == [("b", 2.0), ("c", 1.0)]

        await redis.zincrby(keys.covis("a"), 5.0, "c")  # another client writes
        reads = await _read_until(reader, "a", [("c", 6.0), ("b", 2.0)])
        assert reads <= 2  # the push is read within an event-loop iteration or two
        assert cache.invalidations >= 1
        trips = reader.round_trips
        rows = await reader.read_neighbours(["a", "x"], 10, deadline=in_(2.0))
        assert reader.round_trips == trips  # the new row is cached again; x never left
        assert list(rows["x"]) == [("y", 5.0)]

        await redis.delete(keys.covis("x"))
        await _read_until(reader, "x", [])

        before = {r: _row_cache_sample(r) for r in ("hit", "miss", "invalidated")}
        reader.publish_cache_metrics()
        published = {r: _row_cache_sample(r) - before[r] for r in before}
        assert published == {
            "hit": cache.hits,
            "miss": cache.misses,
            "invalidated": cache.invalidations,
        }
        reader.publish_cache_metrics()  # nothing new since: nothing added
        assert {r: _row_cache_sample(r) - before[r] for r in before} == published
    finally:
        await reader.aclose()


def _row_cache_sample(result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "streamrec_serving_row_cache_total", {"result": result}
    )
    return value or 0.0


async def test_rows_are_forgotten_when_the_connection_is_lost(own_redis: RedisProcess) -> None:
    """A restarted Redis sent its invalidations to a dead socket: nothing cached survives."""
    own_redis.start()
    settings = Settings(redis_url=own_redis.url, redis_retry_after_s=0.0)
    keys = Keyspace(settings.key_prefix)
    writer = Redis.from_url(own_redis.url, socket_timeout=5.0)
    reader = await StateReader.connect(settings)
    try:
        await writer.zadd(keys.covis("a"), {"old": 1.0})
        assert list((await reader.read_neighbours(["a"], 10, deadline=in_(2.0)))["a"]) == [
            ("old", 1.0)
        ]
        await writer.aclose()
        own_redis.stop()
        own_redis.start()  # empty, and it never heard of our tracking
        writer = Redis.from_url(own_redis.url, socket_timeout=5.0)
        await writer.zadd(keys.covis("a"), {"new": 2.0})
        for _ in range(50):  # the first reads may still hit the dead socket
            try:
                rows = await reader.read_neighbours(["a"], 10, deadline=in_(2.0))
                break
            except Exception:  # noqa: BLE001 - UnavailableError until reconnected
                await asyncio.sleep(0.05)
        assert list(rows["a"]) == [("new", 2.0)]
    finally:
        await writer.aclose()
        await reader.aclose()


async def test_flushall_empties_the_cache(own_redis: RedisProcess) -> None:
    own_redis.start()
    settings = Settings(redis_url=own_redis.url)
    keys = Keyspace(settings.key_prefix)
    writer = Redis.from_url(own_redis.url, socket_timeout=5.0)
    reader = await StateReader.connect(settings)
    try:
        await writer.zadd(keys.covis("a"), {"b": 1.0})
        await reader.read_neighbours(["a"], 10, deadline=in_(2.0))
        await writer.flushall()
        await _read_until(reader, "a", [])
    finally:
        await writer.aclose()
        await reader.aclose()


async def test_the_cache_can_be_turned_off(settings: Settings, redis: Redis) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.zadd(keys.covis("a"), {"b": 1.0})
    reader = await StateReader.connect(
        settings.model_copy(update={"serving_neighbour_cache_rows": 0})
    )
    try:
        assert reader.neighbour_cache is None
        for _ in range(2):
            await reader.read_neighbours(["a"], 10, deadline=in_(2.0))
        assert reader.round_trips == 2
    finally:
        await reader.aclose()
