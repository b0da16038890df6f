"""Helpers of the fault tests: a private stack to break, streams with a known answer, servers.

The fault tests stop, kill and restart Kafka and Redis. Doing that to the session's shared
test stack would break concurrent test runs on the machine, so they run on a stack of their
own (:func:`private_stack_for`), started once per module on free ports and thrown away after.
Nothing here asserts a speed: a wait is for a condition, with a deadline generous enough for
a loaded machine (:data:`WAIT_S`), and fails only when the condition never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from core.settings import Settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from streamrec.stack.local import LocalStack
from tests.integration.serving_support import env_for, free_port
from tests.support import REPO, STREAMREC, delete_prefix_keys, stack_settings
from tests.worker_support import outcome

#: Top-K trimming off (K above the number of items), as in test_worker_exactly_once: which
#: members survive a trim depends on batch boundaries, so only untrimmed state is exact.
UNTRIMMED = {
    "covis_top_k": "10000",
    "popularity_top_n": "10000",
    "session_index_sessions_per_item": "10000",
    "batch_size": "200",
}

#: Deadline of every wait for a condition (progress, a log line, health): not a speed bound.
WAIT_S = 120.0


@contextlib.asynccontextmanager
async def settings_on(stack: LocalStack, **overrides: object) -> AsyncIterator[Settings]:
    """Settings with a unique topic and key prefix on ``stack``; topics created, removed after."""
    own = stack_settings(stack, "f", **overrides)
    await kafka_admin.create_topics(own)
    try:
        yield own
    finally:
        # best effort: the stack itself is thrown away at the end of the module
        with contextlib.suppress(Exception):
            await kafka_admin.delete_topics(own)
        with contextlib.suppress(Exception):
            await delete_prefix_keys(own.redis_url, own.key_prefix)


def stream(
    n: int, *, seed: int, first: int = 0, users: int = 2000, items: int = 3000
) -> list[tuple[bytes, bytes]]:
    """Zipf-ish items, ``users`` users in sessions, event times half a second apart.

    Event ``first + i`` is at ten days ago + (first + i) / 2 s: a later part of a stream
    passes ``first`` to continue where the earlier part stopped.
    """
    rng = random.Random(seed)
    base = time.time() - 10 * 86400
    kinds = ["view"] * 8 + ["click", "add_to_cart"]
    out = []
    for i in range(first, first + n):
        user = f"u{rng.randrange(users)}"
        item = f"i{int(rng.paretovariate(1.2)) % items}"
        out.append((user.encode(), outcome(user, item, base + i * 0.5, rng.choice(kinds))))
    return out


async def applied_count(redis: Redis, keys: Keyspace) -> int:
    """Messages covered by the stored offsets (assumes every partition started at 0)."""
    stored = await redis.hgetall(keys.offsets)
    return sum(int(v) + 1 for v in stored.values())


async def wait_progress(
    redis: Redis,
    keys: Keyspace,
    at_least: int,
    proc: subprocess.Popen[bytes],
    within_s: float = WAIT_S,
) -> int:
    """Wait until ``at_least`` messages are applied; fail if the worker dies or never gets there."""
    deadline = time.monotonic() + within_s
    while (count := await applied_count(redis, keys)) < at_least:
        assert proc.poll() is None, "worker died on its own"
        assert time.monotonic() < deadline, f"worker made no progress ({count} applied)"
        await asyncio.sleep(0.02)
    return count


async def recent_items(redis: Redis, keys: Keyspace, users: Sequence[str]) -> dict[str, list[str]]:
    """Each user's recent items (newest first), as the worker stored them."""
    pipe = redis.pipeline(transaction=False)
    for user in users:
        pipe.lrange(keys.user_recent(user), 0, -1)
    replies = await pipe.execute()
    return {
        user: [entry.decode().partition("|")[2] for entry in entries]
        for user, entries in zip(users, replies, strict=True)
    }


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def log_size(path: Path) -> int:
    """Characters in the log so far: where :func:`wait_log` starts looking."""
    return len(log_text(path))


async def wait_log(
    path: Path,
    text: str,
    proc: subprocess.Popen[bytes],
    *,
    after: int = 0,
    within_s: float = WAIT_S,
) -> None:
    """Wait until ``text`` appears in the log past character ``after``; fail if ``proc`` dies."""
    deadline = time.monotonic() + within_s
    while text not in log_text(path)[after:]:
        assert proc.poll() is None, f"process died: {log_text(path)[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {path.name} after {within_s:g} s"
        await asyncio.sleep(0.05)


class ServeProcess:
    """``streamrec serve`` in a subprocess on a free loopback port (own cores, own loop)."""

    def __init__(self, settings: Settings, workdir: Path, **env: str) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        self.log = workdir / "serve.log"
        self._env = {
            **os.environ,
            **env_for(settings, {"STREAMREC_HOME": str(workdir), **env}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.to_thread(self._launch)
        await self.wait_healthy()

    async def wait_healthy(self, within_s: float = WAIT_S) -> None:
        """Wait until the health check answers SERVING; fail if the server exits first."""
        deadline = time.monotonic() + within_s
        while not await self.healthy():
            assert self.alive(), f"server exited: {log_text(self.log)[-2000:]}"
            assert time.monotonic() < deadline, "server did not become healthy"
            await asyncio.sleep(0.2)

    def _launch(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as handle:
            return subprocess.Popen(
                [str(STREAMREC), "serve", "--addr", self.addr, "--metrics-port", "0"],
                env=self._env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    async def healthy(self) -> bool:
        async with grpc.aio.insecure_channel(self.addr) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5.0
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
