"""Helpers shared by the test suites (import as ``from tests.support import …``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis

from core.settings import Settings, load_settings
from schemas.keyspace import Keyspace
from streamrec.stack.local import LocalStack

REPO = Path(__file__).resolve().parent.parent
STREAMREC = Path(sys.executable).with_name("streamrec")

# The test stack: separate ports from the dev stack (19092/19093, 16379) so a developer's
# running stack is never disturbed. scripts/test exports the same addresses.
TEST_KAFKA_BOOTSTRAP = "127.0.0.1:29092"
TEST_REDIS_URL = "redis://127.0.0.1:26379/0"

#: Deadline for an effect that must eventually happen: generous, because the test machines
#: are shared and loaded (2 cores for broker, Redis, servers and tests); an effect that never
#: comes still fails, only later. Speed targets belong to ``streamrec bench``, not to tests.
EVENTUALLY_S = 60.0


def free_ports() -> tuple[int, int]:
    """A Kafka port whose successor (the controller port) is free too, and a Redis port.

    Chosen per run (not fixed) so concurrent test runs on one machine do not collide.
    """
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            kafka = int(first.getsockname()[1])
        if kafka >= 65534:
            continue
        with socket.socket() as controller, socket.socket() as redis:
            try:
                controller.bind(("127.0.0.1", kafka + 1))
            except OSError:
                continue
            redis.bind(("127.0.0.1", 0))
            return kafka, int(redis.getsockname()[1])
    raise AssertionError("no free ports")


class RunCli(Protocol):
    def __call__(
        self, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 180.0
    ) -> subprocess.CompletedProcess[str]: ...


@contextlib.contextmanager
def private_stack_for(home: Path, kafka_libs_dir: Path) -> Iterator[LocalStack]:
    """A Kafka + Redis on free ports under ``home`` (shared jar cache), started, then killed.

    For tests that stop, kill or restart services: doing that to the shared session stack
    would break concurrent test runs.
    """
    kafka_port, redis_port = free_ports()
    stack = LocalStack(
        load_settings(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            home=home,
            kafka_libs_dir=kafka_libs_dir,
        ),
        timeout_s=120.0,
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop_kafka(graceful=False)
        stack.stop_redis(graceful=False)


def stack_settings(stack: LocalStack, tag: str = "t", **overrides: object) -> Settings:
    """Settings on ``stack`` with a unique topic and key prefix (``tag`` + random hex)."""
    prefix = f"{tag}{uuid.uuid4().hex[:8]}"
    return load_settings(
        kafka_bootstrap=stack.settings.kafka_bootstrap,
        redis_url=stack.settings.redis_url,
        topic_prefix=prefix,
        key_prefix=prefix,
        home=stack.settings.home,
        kafka_libs_dir=stack.settings.kafka_libs_dir,
        worker_metrics_port=0,
        server_metrics_port=0,
        **overrides,
    )


def run_cli(
    *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """Run ``streamrec ARGS`` in a subprocess; ``env`` overrides (None removes a variable)."""
    full_env = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    return subprocess.run(
        [str(STREAMREC), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@contextlib.contextmanager
def hung_listener() -> Iterator[int]:
    """A loopback port whose listener completes TCP handshakes (the kernel's backlog) and
    never answers a byte: a hung server. Yields the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def delete_prefix_keys(redis_url: str, key_prefix: str, timeout_s: float = 30.0) -> int:
    """Delete every Redis key of ``key_prefix`` (SCAN + UNLINK); return how many."""
    client = Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    deleted = 0
    try:
        async with asyncio.timeout(timeout_s):
            batch: list[bytes] = []
            async for key in client.scan_iter(match=Keyspace(key_prefix).pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += await client.unlink(*batch)
                    batch.clear()
            if batch:
                deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted
