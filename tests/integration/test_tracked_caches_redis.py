"""The server's in-process rows and user items stay exact through Redis invalidations.

The tests of what each request client does itself (invalidations pushed on the wire
client's own connection, redirected to the redis-py client's listener; reconnects;
FLUSHALL) run over both clients (:data:`~serving.state_reader.REQUEST_CLIENTS`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.errors import UnavailableError
from core.settings import Settings
from schemas.keyspace import Keyspace
from serving import metrics
from serving.state_reader import REQUEST_CLIENTS, RequestClientKind, StateReader, UserState
from tests.integration.serving_support import RedisProcess

#: parametrizes a test over the request clients (``client`` argument)
each_client = pytest.mark.parametrize("client", REQUEST_CLIENTS)


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


@each_client
async def test_a_cached_row_is_replaced_as_soon_as_redis_changes_it(
    settings: Settings, redis: Redis, client: RequestClientKind
) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.zadd(keys.covis("a"), {"b": 2.0, "c": 1.0})
    await redis.zadd(keys.covis("x"), {"y": 5.0})
    reader = await StateReader.connect(settings, client=client)
    try:
        cache = reader.neighbour_cache
        assert cache is not None
        first = await reader.read_neighbours(["a", "x"], 10, deadline=in_(2.0))
        assert reader.requests.tracking
        assert (reader.wire is not None) == (client == "wire")
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

        before = {r: _sample("row", r) for r in ("hit", "miss", "invalidated")}
        reader.publish_cache_metrics()
        published = {r: _sample("row", r) - before[r] for r in before}
        assert published == {
            "hit": cache.hits,
            "miss": cache.misses,
            "invalidated": cache.invalidations,
        }
        reader.publish_cache_metrics()  # nothing new since: nothing added
        assert {r: _sample("row", r) - before[r] for r in before} == published
    finally:
        await reader.aclose()


def _sample(cache: str, result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        f"streamrec_serving_{cache}_cache_total", {"result": result}
    )
    return value or 0.0


async def _read_again(reader: StateReader, anchor: str) -> list[tuple[str, float]]:
    """``anchor``'s row once the reader reconnected (the first reads may hit a dead socket)."""
    end = asyncio.get_running_loop().time() + 5.0
    while True:
        try:
            return list((await reader.read_neighbours([anchor], 10, deadline=in_(2.0)))[anchor])
        except UnavailableError as exc:  # until reconnected
            # a lost connection fails the read at once: nothing waits for a reply that
            # cannot come (redis-py once hung in its reconnect, disconnected by the listener)
            assert "TimeoutError" not in str(exc)
            assert asyncio.get_running_loop().time() < end, "not reconnected"
            await asyncio.sleep(0.05)


async def _cached(reader: StateReader, anchor: str) -> bool:
    """Whether ``anchor``'s row is read from the cache (False while Redis cannot be read)."""
    trips = reader.round_trips
    try:
        await reader.read_neighbours([anchor], 10, deadline=in_(2.0))
    except Exception:  # noqa: BLE001 - UnavailableError until reconnected
        return False
    return reader.round_trips == trips


async def _tracking_again(reader: StateReader, writer: Redis, keys: Keyspace) -> None:
    """Tracking resumed: a row read now is cached, and a write by another client drops it."""
    end = asyncio.get_running_loop().time() + 5.0
    # the read that reconnects (redis-py: a pooled connection made again) is not kept
    while not await _cached(reader, "t"):
        assert asyncio.get_running_loop().time() < end, "tracking did not resume"
        await asyncio.sleep(0.02)
    cache = reader.neighbour_cache
    assert cache is not None and reader.requests.tracking
    invalidations = cache.invalidations
    await writer.zadd(keys.covis("t"), {"u": 1.0})
    await _read_until(reader, "t", [("u", 1.0)])
    assert cache.invalidations > invalidations
    assert await _cached(reader, "t")


async def _seed_and_cache(reader: StateReader, writer: Redis, keys: Keyspace, tag: str) -> None:
    """``a``'s row and u1's recent items hold ``tag``, read and cached by ``reader``."""
    await writer.delete(keys.covis("a"), keys.user_recent("u1"))
    await writer.zadd(keys.covis("a"), {tag: 1.0})
    await writer.lpush(keys.user_recent("u1"), f"1.000|{tag}")
    assert await _read_again(reader, "a") == [(tag, 1.0)]
    assert list((await _read_user(reader, "u1")).recent) == [(1.0, tag)]
    trips = reader.round_trips
    await reader.read_neighbours(["a"], 10, deadline=in_(2.0))
    await _read_user(reader, "u1")
    assert reader.round_trips == trips  # both cached
    assert reader.neighbour_cache is not None and len(reader.neighbour_cache) >= 1
    assert reader.user_caches is not None and len(reader.user_caches.recent) == 1


async def _caches_emptied(reader: StateReader) -> None:
    """Every cache is emptied without a read (a push or a lost connection seen by a task)."""
    end = asyncio.get_running_loop().time() + 5.0
    while sum(map(len, reader._caches())):
        assert asyncio.get_running_loop().time() < end, "the caches kept their entries"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _own_reader(
    own_redis: RedisProcess, client: RequestClientKind
) -> AsyncIterator[tuple[StateReader, Redis, Keyspace]]:
    """A reader through ``client`` and a writer, on a started Redis of the test's own."""
    own_redis.start()
    settings = Settings(redis_url=own_redis.url, redis_retry_after_s=0.0)
    writer = Redis.from_url(own_redis.url, socket_timeout=5.0)
    reader = await StateReader.connect(settings, client=client)
    try:
        yield reader, writer, Keyspace(settings.key_prefix)
    finally:
        await writer.aclose()
        await reader.aclose()


@each_client
async def test_rows_are_forgotten_when_the_connection_is_lost(
    own_redis: RedisProcess, client: RequestClientKind
) -> None:
    """A restarted Redis sent its invalidations to a dead socket: nothing cached survives."""
    async with _own_reader(own_redis, client) as (reader, writer, keys):
        await _seed_and_cache(reader, writer, keys, "old")
        own_redis.stop()
        own_redis.start()  # empty, and it never heard of our tracking
        await writer.connection_pool.disconnect()
        await writer.zadd(keys.covis("a"), {"new": 2.0})
        await writer.lpush(keys.user_recent("u1"), "2.000|new")
        assert await _read_again(reader, "a") == [("new", 2.0)]
        assert list((await _read_user(reader, "u1")).recent) == [(2.0, "new")]
        await _tracking_again(reader, writer, keys)


@each_client
async def test_rows_are_forgotten_when_redis_kills_the_readers_connections(
    own_redis: RedisProcess, client: RequestClientKind
) -> None:
    """CLIENT KILL of every connection but the writer's (redis-py: pool and listener)."""
    async with _own_reader(own_redis, client) as (reader, writer, keys):
        await _seed_and_cache(reader, writer, keys, "old")
        for kind in ("normal", "pubsub"):
            await writer.client_kill_filter(_type=kind, skipme=True)
        await _caches_emptied(reader)
        await _tracking_again(reader, writer, keys)
        await _seed_and_cache(reader, writer, keys, "new")


@each_client
async def test_flushall_empties_the_cache(
    own_redis: RedisProcess, client: RequestClientKind
) -> None:
    async with _own_reader(own_redis, client) as (reader, writer, keys):
        await _seed_and_cache(reader, writer, keys, "b")
        await writer.flushall()
        await _caches_emptied(reader)
        await _read_until(reader, "a", [])
        await _tracking_again(reader, writer, keys)


async def test_the_caches_can_be_turned_off(settings: Settings, redis: Redis) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.zadd(keys.covis("a"), {"b": 1.0})
    reader = await StateReader.connect(
        settings.model_copy(
            update={"serving_neighbour_cache_rows": 0, "serving_user_cache_users": 0}
        )
    )
    try:
        assert reader.neighbour_cache is None and reader.user_caches is None
        for _ in range(2):
            await reader.read_neighbours(["a"], 10, deadline=in_(2.0))
            await _read_user(reader, "u1")
        assert reader.round_trips == 4
    finally:
        await reader.aclose()


async def _read_user(reader: StateReader, user: str, max_recent: int = 20) -> UserState:
    return await reader.read_user(
        user_id=user,
        session_id=None,
        max_recent=max_recent,
        with_seen=True,
        segment=None,
        top_n=10,
        deadline=in_(2.0),
    )


@each_client
async def test_a_users_items_are_reread_as_soon_as_an_event_of_theirs_lands(
    settings: Settings, redis: Redis, client: RequestClientKind
) -> None:
    """The worker's write to a user's keys drops them from every server's user cache."""
    keys = Keyspace(settings.key_prefix)
    await redis.lpush(keys.user_recent("u1"), "100.000|a", "200.000|b")
    await redis.zadd(keys.user_seen("u1"), {"a": 100.0, "b": 200.0})
    reader = await StateReader.connect(settings, client=client)
    try:
        users = reader.user_caches
        assert users is not None
        first = await _read_user(reader, "u1")
        assert list(first.recent) == [(200.0, "b"), (100.0, "a")]
        assert first.seen == {"a", "b"}
        trips = reader.round_trips
        again = await _read_user(reader, "u1")
        assert reader.round_trips == trips  # both from the cache, no round trip
        assert again == first and again.recent is first.recent
        assert list((await _read_user(reader, "u1", max_recent=1)).recent) == [(200.0, "b")]
        assert reader.round_trips == trips  # fewer entries than cached: still a hit

        # the worker applies an event of u1 (another connection): recent and seen change
        await redis.lpush(keys.user_recent("u1"), "300.000|c")
        await redis.zadd(keys.user_seen("u1"), {"c": 300.0})
        end = asyncio.get_running_loop().time() + 2.0
        reads = 0
        while True:
            reads += 1
            state = await _read_user(reader, "u1")
            if state.seen == {"a", "b", "c"} and state.recent[0] == (300.0, "c"):
                break
            assert asyncio.get_running_loop().time() < end, f"still {state} after {reads}"
            await asyncio.sleep(0.001)
        assert reads <= 2  # the push is read within an event-loop iteration or two
        assert users.recent.invalidations >= 1 and users.seen.invalidations >= 1

        # more entries than were read: a miss, read again
        trips = reader.round_trips
        await redis.rpush(keys.user_recent("u2"), *[f"{t}.000|i{t}" for t in range(30, 0, -1)])
        assert len((await _read_user(reader, "u2", max_recent=5)).recent) == 5
        assert len((await _read_user(reader, "u2", max_recent=20)).recent) == 20
        assert reader.round_trips == trips + 2

        before = {r: _sample("user", r) for r in ("hit", "miss", "invalidated")}
        reader.publish_cache_metrics()
        published = {r: _sample("user", r) - before[r] for r in before}
        assert published == users.counts() and published["hit"] >= 3
    finally:
        await reader.aclose()


async def test_a_session_read_once_answers_from_the_cache(settings: Settings, redis: Redis) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.lpush(keys.session_recent("s1"), "100.000|a", "200.000|b", "300.000|c")
    reader = await StateReader.connect(settings)
    try:
        for _ in range(2):
            state = await reader.read_user(
                user_id=None,
                session_id="s1",
                max_recent=2,
                with_seen=True,
                segment=None,
                top_n=10,
                deadline=in_(2.0),
            )
            assert list(state.recent) == [(300.0, "c"), (200.0, "b")]
            assert state.seen == {"a", "b", "c"}  # the whole session counts as seen
        assert reader.round_trips == 1
    finally:
        await reader.aclose()
