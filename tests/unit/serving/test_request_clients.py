"""The state reader's request-path clients without Redis: choice, cache hooks, redis-py's
tracking set-up and invalidation listener (scripted connections)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from core.settings import load_settings
from schemas.keyspace import Keyspace
from serving.neighbour_cache import NeighbourCache
from serving.state_reader import RedisPyClient, StateReader, UserCaches, request_client
from serving.wire import WireClient

KEYS = Keyspace("rc")
SETTINGS = load_settings(redis_url="redis://127.0.0.1:1/0", network_timeout_s=1.0)


@pytest.fixture
async def fake() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.aclose()


async def test_each_kind_gets_its_client_and_tls_falls_back_to_redis_py() -> None:
    wire = request_client("wire", SETTINGS)
    plain = request_client("redis-py", SETTINGS)
    tls = request_client("wire", SETTINGS.model_copy(update={"redis_url": "rediss://h:1/0"}))
    try:
        assert isinstance(wire, WireClient)
        assert isinstance(plain, RedisPyClient) and isinstance(tls, RedisPyClient)
        assert not (wire.tracking or plain.tracking or tls.tracking)  # nothing opened yet
    finally:
        for client in (wire, plain, tls):
            await client.aclose()


def _wire_of(reader: StateReader) -> WireClient | None:
    return reader.wire  # (a call: mypy does not narrow it from one assert to the next)


def _filled(cache: NeighbourCache, key: str) -> None:
    (token,) = cache.reserve([key])
    cache.fill(key, token, 10, (("b", 1.0),))


async def test_use_client_hooks_the_caches_and_starts_them_empty(fake: aioredis.Redis) -> None:
    reader = StateReader(fake, KEYS)
    bare = reader.requests
    assert isinstance(bare, RedisPyClient)
    assert bare.on_push is None  # a bare reader keeps nothing, tracks nothing
    rows = reader.neighbour_cache = NeighbourCache(10)
    users = reader.user_caches = UserCaches.sized(10)
    try:
        wire = reader.use_client("wire", SETTINGS)
        assert reader.requests is wire and _wire_of(reader) is wire
        assert wire.on_push is not None and wire.on_reset is not None
        _filled(rows, "x")
        _filled(rows, "y")
        (token,) = users.seen.reserve(["s"])
        users.seen.fill("s", token, 10, frozenset({"a"}))
        wire.on_push(["invalidate", ["x", "s"]])
        assert rows.get("x", 10) is None and rows.get("y", 10) is not None
        assert users.seen.lookup("s", 10) is None
        wire.on_push(["tracking-redir-broken", 3])  # not an invalidation: ignored
        assert rows.get("y", 10) is not None
        wire.on_reset()
        assert len(rows) == 0

        _filled(rows, "x")
        plain = reader.use_client("redis-py", SETTINGS)  # another client: caches emptied
        assert reader.requests is plain and _wire_of(reader) is None and len(rows) == 0
        assert plain.on_push is not None
        assert reader.use_client("wire", SETTINGS) is wire  # one client per kind
    finally:
        await reader.aclose()


async def test_redis_py_client_on_a_bare_connection(fake: aioredis.Redis) -> None:
    client = RedisPyClient(fake)
    resets: list[int] = []
    client.on_reset = lambda: resets.append(1)
    await fake.set("s", "text")
    loop = asyncio.get_running_loop()
    await client.open(loop.time() + 1.0)
    replies = await client.execute([("GET", "s"), ("LRANGE", "s", 0, 1)], loop.time() + 1.0)
    assert replies[0] == "text" and isinstance(replies[1], ResponseError)
    assert not client.tracking and resets == []
    await client.aclose()
    assert await fake.get("s") == "text"  # not its client: left open


async def test_a_failed_batch_resets_the_caches() -> None:
    client = RedisPyClient.from_url(
        SETTINGS.redis_url, connect_timeout_s=1.0, socket_timeout_s=1.0
    )  # nothing listens on port 1
    resets: list[int] = []
    client.on_reset = lambda: resets.append(1)
    try:
        with pytest.raises(RedisConnectionError):
            await client.execute([("PING",)], asyncio.get_running_loop().time() + 1.0)
        assert resets == [1]  # the connection may have gone, and with it its tracked keys
    finally:
        await client.aclose()


class _Connection:
    """Replies scripted per command; ``read_response`` raises what the script holds."""

    script: ClassVar[list[Any]] = []
    made: ClassVar[list[_Connection]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[Any, ...]] = []
        self.connected = 0
        self.closed = False
        _Connection.made.append(self)

    async def connect(self) -> None:
        self.connected += 1

    async def on_connect(self) -> None:
        self.connected += 1

    async def send_command(self, *args: Any) -> None:
        self.sent.append(args)

    async def read_response(self, **_: Any) -> Any:
        await asyncio.sleep(0)
        if not _Connection.script:
            await asyncio.Event().wait()  # nothing more to say: wait like an idle socket
        reply = _Connection.script.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def disconnect(self, nowait: bool = False) -> None:
        self.closed = True


class _Pool:
    connection_class = _Connection

    def __init__(self) -> None:
        self.connection_kwargs = {"host": "h", "redis_connect_func": print, "protocol": 3}
        self.disconnects = 0

    async def disconnect(self) -> None:
        self.disconnects += 1


class _Redis:
    def __init__(self) -> None:
        self.connection_pool = _Pool()
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_redis_py_tracking_set_up_and_invalidation_listener() -> None:
    redis = _Redis()
    client = RedisPyClient(redis, owned=True)  # type: ignore[arg-type]
    pushes: list[list[Any]] = []
    resets: list[int] = []
    client.on_push, client.on_reset = pushes.append, lambda: resets.append(1)
    _Connection.made.clear()
    _Connection.script = [
        7,  # CLIENT ID
        ["subscribe", "__redis__:invalidate", 1],
        ["message", "__redis__:invalidate", ["k1", "k2"]],
        ["message", "__redis__:invalidate", None],  # FLUSHALL
        RedisConnectionError("lost"),
        8,  # the listener again, with a new id
        ["subscribe", "__redis__:invalidate", 1],
    ]
    listener = asyncio.get_running_loop().create_task(client._listen())
    try:
        async with asyncio.timeout(5.0):
            while len(_Connection.made) < 2 or _Connection.script:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await client._subscribed.wait()
        assert client.tracking
        first, second = _Connection.made
        assert first.kwargs == {"host": "h", "protocol": 2, "socket_timeout": None}
        assert first.sent == [("CLIENT", "ID"), ("SUBSCRIBE", "__redis__:invalidate")]
        assert first.closed and not second.closed
        assert pushes == [["invalidate", ["k1", "k2"]], ["invalidate", None]]
        # subscribed (reset), lost (reset), subscribed again (reset); pool dropped each time
        assert len(resets) == 3 and redis.connection_pool.disconnects == 2

        pooled = _Connection()
        _Connection.script = ["OK", "OK"]
        await client._set_up(pooled)  # a new pooled connection: tracking redirected here
        assert pooled.sent == [("CLIENT", "TRACKING", "ON", "REDIRECT", 8, "OPTIN")]
        assert len(resets) == 3
        await client._set_up(pooled)  # the same connection made again: its keys are lost
        assert len(resets) == 4
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert client._redirect is None and not client._subscribed.is_set()
    await client.aclose()
    assert redis.closed
