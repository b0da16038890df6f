"""Helpers of the serving integration tests: state seeding, servers, clients, own Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import grpc
import orjson
from pydantic import SecretStr
from redis.asyncio import Redis

from core import kafka_clients
from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.keyspace import Keyspace, segment_id
from serving import state_reader
from serving.server import Server
from serving.state_reader import RequestClientKind
from tests.support import EVENTUALLY_S

TOKEN = "test-admin-token"
#: the bootstrap admin (STREAMREC_ADMIN_TOKEN); a caller-written user header changes nothing
ADMIN_MD = (("authorization", f"Bearer {TOKEN}"),)
BOOTSTRAP = "bootstrap-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serving_settings(settings: Settings, tmp_path: Path, **overrides: Any) -> Settings:
    """The fixture's settings, adapted for a loopback test server."""
    update: dict[str, Any] = {
        "grpc_addr": "127.0.0.1:0",
        "server_metrics_port": 0,
        "serving_refresh_s": 0.2,
        "last_known_file": tmp_path / "last_known.json",
        "admin_token": TOKEN,
        "shutdown_grace_s": 2.0,
        "ranker_popularity_exponent": 0.0,
        "ranker_max_category_share": 1.0,
    }
    update.update(overrides)
    if isinstance(update["admin_token"], str):
        update["admin_token"] = SecretStr(update["admin_token"])
    return settings.model_copy(update=update)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, client: RequestClientKind = "wire", **kw: Any
) -> AsyncIterator[tuple[Server, grpc.aio.Channel]]:
    """A started server and a channel to it; both closed after.

    ``client``: the request path's Redis client of the server (the server itself takes the
    wire client for ``redis://`` URLs; ``redis-py`` is what it uses for ``rediss://``).
    """
    made = state_reader.request_client
    with mock.patch.object(state_reader, "request_client", lambda _kind, s: made(client, s)):
        server = Server(settings, **kw)
        await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield server, channel
    finally:
        await channel.close(None)
        await server.stop(1.0)


def recommender(channel: grpc.aio.Channel) -> pb_grpc.RecommenderAsyncStub:
    return pb_grpc.RecommenderStub(channel)


def admin(channel: grpc.aio.Channel) -> pb_grpc.AdminAsyncStub:
    return pb_grpc.AdminStub(channel)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata of a principal's token."""
    return (("authorization", f"Bearer {token}"),)


async def add_principal(
    channel: grpc.aio.Channel, name: str, role: str
) -> tuple[tuple[str, str], ...]:
    """Add a principal through Admin (as the bootstrap admin); its call metadata."""
    added = await admin(channel).AddPrincipal(
        pb.AddPrincipalRequest(name=name, role=role), metadata=ADMIN_MD
    )
    return bearer(added.token)


@dataclass(frozen=True, slots=True)
class World:
    """A small known-answer state: user u1 just viewed a; a's neighbours are b > c > d."""

    now: float
    tenant: str = "shop"
    surface: str = "home"


async def seed(redis: Redis, keys: Keyspace, now: float | None = None) -> World:
    now = time.time() if now is None else now
    world = World(now)
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(keys.covis("a"), {"b": 50.0, "c": 30.0, "d": 10.0, "a2": 5.0})
    pipe.zadd(keys.covis("x"), {"y": 9.0, "z": 3.0})
    pipe.zadd(keys.popularity(), {f"p{i}": 100.0 - i for i in range(20)})
    pipe.zadd(
        keys.popularity(segment_id(world.tenant, world.surface, "")),
        {f"s{i}": 10.0 - i for i in range(5)},
    )
    pipe.lpush(keys.user_recent("u1"), f"{now - 60:.3f}|a")
    pipe.zadd(keys.user_seen("u1"), {"a": now - 60, "a2": now - 3600})
    pipe.lpush(keys.session_recent("sess1"), f"{now - 5:.3f}|x")
    pipe.hset(keys.item_categories, mapping={"b": "shoes", "c": "shoes", "d": "hats"})
    pipe.incr(keys.catalog_version)
    pipe.hset(keys.meta, mapping={"t0": "0", "last_write": repr(now - 2.0)})
    await pipe.execute()
    return world


def ctx(world: World) -> pb.Context:
    return pb.Context(tenant=world.tenant, surface=world.surface)


async def wait_for(predicate: Any, timeout_s: float = EVENTUALLY_S, every_s: float = 0.05) -> Any:
    """Await ``predicate()`` (an async callable) until truthy; return its value."""
    end = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value or time.monotonic() > end:
            return value
        await asyncio.sleep(every_s)


async def consume_exposures(
    settings: Settings, request_ids: Sequence[str], timeout_s: float = 30.0
) -> dict[str, tuple[bytes | None, dict[str, Any]]]:
    """Read the exposures topic from the start until every request id is seen."""
    consumer = kafka_clients.consumer(
        settings,
        settings.topic("exposures"),
        client_id="streamrec-test",
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: dict[str, tuple[bytes | None, dict[str, Any]]] = {}
    try:
        end = time.monotonic() + timeout_s
        while set(request_ids) - set(found) and time.monotonic() < end:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = orjson.loads(record.value)
                    found[event["request_id"]] = (record.key, event)
    finally:
        await consumer.stop()
    return found


class RedisProcess:
    """A redis-server this test owns (no persistence), on a fixed free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
                self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


def env_for(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """STREAMREC_* variables reproducing ``settings`` for a subprocess."""
    env = {
        "STREAMREC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMREC_REDIS_URL": settings.redis_url,
        "STREAMREC_TOPIC_PREFIX": settings.topic_prefix,
        "STREAMREC_KEY_PREFIX": settings.key_prefix,
        "STREAMREC_SERVER_METRICS_PORT": "0",
        "STREAMREC_ADMIN_TOKEN": TOKEN,
    }
    env.update(extra or {})
    return env
