"""The request path's lean Redis connection (serving.wire) against real Redis, with faults."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis
from redis.exceptions import InvalidResponse, ResponseError

from core.settings import Settings
from schemas.keyspace import Keyspace, segment_id
from serving.state_reader import StateReader
from serving.wire import WireClient
from tests.integration.serving_support import RedisProcess, seed


@pytest.fixture
async def wire(redis_url: str) -> AsyncIterator[WireClient]:
    client = WireClient.from_url(redis_url, connect_timeout_s=1.0, socket_timeout_s=5.0)
    assert client is not None
    try:
        yield client
    finally:
        await client.aclose()


#: Deadline of calls that must succeed: generous (the test machines are shared and loaded);
#: short deadlines are only for calls meant to time out. Speed is ``streamrec bench serve``'s.
ANSWER_S = 30.0


def in_(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_replies_come_back_raw_and_in_order(
    wire: WireClient, redis: Redis, settings: Settings
) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.rpush(keys.user_recent("u"), "1.0|a", "2.0|b")
    await redis.zadd(keys.covis("a"), {"b": 2.5, "c": 1.0, "ü": float("inf")})
    replies = await wire.execute(
        [
            ("LRANGE", keys.user_recent("u"), 0, -1),
            ("ZREVRANGE", keys.covis("a"), 0, -1, "WITHSCORES"),
            ("GET", keys.rules_version),
            ("LRANGE", keys.covis("a"), 0, -1),  # wrong type: an error reply, in its place
            ("ZRANGE", keys.covis("a"), 0, 0),
        ],
        in_(ANSWER_S),
    )
    assert replies[0] == ["1.0|a", "2.0|b"]
    assert replies[1] == [["ü", float("inf")], ["b", 2.5], ["c", 1.0]]  # RESP3 doubles
    assert replies[2] is None
    assert isinstance(replies[3], ResponseError) and "WRONGTYPE" in str(replies[3])
    assert replies[4] == ["c"]
    await redis.zadd(keys.covis("bad"), {b"\xff\xfe": 1.0})
    broken, fine = await wire.execute(
        [("ZRANGE", keys.covis("bad"), 0, -1), ("ZRANGE", keys.covis("a"), 0, 0)], in_(ANSWER_S)
    )
    assert isinstance(broken, InvalidResponse) and "UTF-8" in str(broken)
    assert fine == ["c"]  # the stream stays in sync after a reply that does not decode


async def test_concurrent_callers_share_the_socket_and_get_their_own_replies(
    wire: WireClient, redis: Redis, settings: Settings
) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.mset({keys.stats(f"k{n}"): f"v{n}" for n in range(300)})

    async def get(n: int) -> list[object]:
        await asyncio.sleep(0.001 * (n % 7))
        return await wire.execute([("GET", keys.stats(f"k{n}")), ("PING",)], in_(ANSWER_S))

    results = await asyncio.gather(*(get(n) for n in range(300)))
    assert results == [[f"v{n}", "PONG"] for n in range(300)]


async def test_the_database_number_of_the_url_is_selected(
    redis_url: str, settings: Settings
) -> None:
    url = f"{redis_url.rsplit('/', 1)[0]}/5"
    other = Redis.from_url(url)
    key = Keyspace(settings.key_prefix).stats("db5")
    client = WireClient.from_url(url, connect_timeout_s=1.0, socket_timeout_s=5.0)
    assert client is not None
    try:
        await other.set(key, "five")
        assert await client.execute([("GET", key)], in_(ANSWER_S)) == ["five"]
    finally:
        await other.delete(key)
        await other.aclose()
        await client.aclose()


async def test_a_hung_redis_times_out_at_the_deadline_and_late_replies_are_dropped(
    own_redis: RedisProcess,
) -> None:
    own_redis.start()
    # the socket timeout is far past ANSWER_S: only the call's deadline can end the wait
    client = WireClient.from_url(
        own_redis.url, connect_timeout_s=1.0, socket_timeout_s=2 * ANSWER_S
    )
    assert client is not None
    try:
        await client.execute([("SET", "k", "before")], in_(ANSWER_S))
        own_redis.pause()
        try:
            started = time.monotonic()
            call = asyncio.ensure_future(client.execute([("GET", "k"), ("GET", "k")], in_(0.2)))
            done, _ = await asyncio.wait({call}, timeout=ANSWER_S)
            if not done:
                call.cancel()
            assert call in done, "not ended by its 0.2 s deadline"
            assert isinstance(call.exception(), TimeoutError)
            # it waited until the deadline first (a lower bound: load can only add to it)
            assert time.monotonic() - started >= 0.15
            with pytest.raises(TimeoutError):
                await client.execute([("SET", "k", "during")], in_(0.1))
        finally:
            own_redis.resume()
        # the late replies of both timed-out calls arrive first; they must not be taken
        # for this call's replies
        assert await client.execute([("GET", "k"), ("ECHO", "x")], in_(ANSWER_S)) == ["during", "x"]
        assert client.connected
    finally:
        await client.aclose()


async def test_a_connection_silent_past_the_socket_timeout_is_dropped(
    own_redis: RedisProcess,
) -> None:
    own_redis.start()
    client = WireClient.from_url(own_redis.url, connect_timeout_s=1.0, socket_timeout_s=0.3)
    assert client is not None
    try:
        await client.execute([("PING",)], in_(ANSWER_S))
        own_redis.pause()
        try:
            with pytest.raises(TimeoutError):
                await client.execute([("PING",)], None)  # None: the socket timeout
            assert not client.connected
        finally:
            own_redis.resume()
        assert await client.execute([("PING",)], in_(ANSWER_S)) == ["PONG"]  # reconnected
    finally:
        await client.aclose()


async def test_refused_lost_and_restored_connections(own_redis: RedisProcess) -> None:
    client = WireClient.from_url(own_redis.url, connect_timeout_s=0.5, socket_timeout_s=5.0)
    assert client is not None
    try:
        with pytest.raises(ConnectionError):  # not started yet: refused
            await client.execute([("PING",)], in_(ANSWER_S))
        own_redis.start()
        assert await client.execute([("PING",)], in_(ANSWER_S)) == ["PONG"]
        own_redis.pause()
        pending = asyncio.ensure_future(client.execute([("PING",)], in_(ANSWER_S)))
        await asyncio.sleep(0.1)
        assert own_redis.proc is not None
        own_redis.proc.kill()  # gone for good with a call in flight (SIGKILL while stopped)
        own_redis.proc.wait(10)
        own_redis.proc = None
        with pytest.raises(ConnectionError):
            await pending
        own_redis.start()
        assert await client.execute([("PING",)], in_(ANSWER_S)) == ["PONG"]
    finally:
        await client.aclose()


async def test_close_fails_waiters_and_later_calls(own_redis: RedisProcess) -> None:
    own_redis.start()
    client = WireClient.from_url(own_redis.url, connect_timeout_s=1.0, socket_timeout_s=5.0)
    assert client is not None
    try:
        await client.execute([("PING",)], in_(ANSWER_S))
        own_redis.pause()
        waiting = asyncio.ensure_future(client.execute([("PING",)], in_(ANSWER_S)))
        await asyncio.sleep(0.05)
        await client.aclose()
        with pytest.raises(ConnectionError):
            await waiting
        with pytest.raises(ConnectionError):
            await client.execute([("PING",)], in_(ANSWER_S))
        await client.aclose()  # idempotent
    finally:
        own_redis.resume()
        await client.aclose()


async def test_state_reader_answers_the_same_over_both_connections(
    settings: Settings, redis: Redis
) -> None:
    """connect() uses the lean connection; a bare redis-py client must read the same."""
    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    segment = segment_id(world.tenant, world.surface, "")
    lean = await StateReader.connect(settings)
    plain = StateReader(Redis.from_url(settings.redis_url, decode_responses=True), keys)
    try:
        assert lean.wire is not None and plain.wire is None
        answers = []
        for reader in (lean, plain):
            user = await reader.read_user(
                user_id="u1",
                session_id=None,
                max_recent=20,
                with_seen=True,
                segment=segment,
                top_n=3,
                deadline=in_(ANSWER_S),
            )
            session = await reader.read_user(
                user_id=None,
                session_id="sess1",
                max_recent=20,
                with_seen=False,
                segment=None,
                top_n=3,
                deadline=in_(ANSWER_S),
            )
            rows = await reader.read_neighbours(["a", "x", "nope"], 3, deadline=in_(ANSWER_S))
            neighbours = {anchor: list(row) for anchor, row in rows.items()}  # lean: tuples
            similar = await reader.read_similar(
                "a", 2, segment=segment, top_n=2, deadline=in_(ANSWER_S)
            )
            # lean: recent items as the cache keeps them (tuples)
            user = replace(user, recent=list(user.recent))
            session = replace(session, recent=list(session.recent))
            answers.append((user, session, neighbours, similar))
        assert answers[0] == answers[1]
        user, session, neighbours, similar = answers[0]
        assert [item for _, item in user.recent] == ["a"] and user.seen == {"a", "a2"}
        assert user.segment_popularity == [("s0", 10.0), ("s1", 9.0), ("s2", 8.0)]
        assert [item for _, item in session.recent] == ["x"]
        assert neighbours == {
            "a": [("b", 50.0), ("c", 30.0), ("d", 10.0)],
            "x": [("y", 9.0), ("z", 3.0)],
            "nope": [],
        }
        assert similar == ([("b", 50.0), ("c", 30.0)], [("s0", 10.0), ("s1", 9.0)])
        assert lean.round_trips == plain.round_trips == 4
    finally:
        await lean.aclose()
        await plain.aclose()
