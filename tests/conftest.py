"""Shared fixtures: one Kafka and one Redis for the whole run, an isolated prefix per test.

Where the services come from:

1. ``STREAMREC_KAFKA_BOOTSTRAP`` / ``STREAMREC_REDIS_URL`` when set (``scripts/test`` exports
   its test stack there), else the test ports ``127.0.0.1:29092`` and
   ``redis://127.0.0.1:26379/0`` (never the dev stack's ports).
2. A stack someone started by hand is used as it is and left running.
3. Local addresses, with java + redis-server available: the session takes a shared lease on
   that stack (:meth:`streamrec.stack.local.LocalStack.lease`): what is down is started, and the
   last concurrent user (another pytest session, ``streamrec stack exec``) stops it.
4. Else, if a Docker engine answers, Kafka and Redis run in throwaway containers.

The addresses in use are exported to ``STREAMREC_KAFKA_BOOTSTRAP`` / ``STREAMREC_REDIS_URL``
for the session, so CLI subprocesses and ``load_settings()`` see the same services.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.settings import Settings, load_settings
from messaging import kafka_admin
from streamrec.stack.local import LocalStack, kafka_libs_dir, missing_prerequisites
from tests.support import (
    TEST_KAFKA_BOOTSTRAP,
    TEST_REDIS_URL,
    RunCli,
    delete_prefix_keys,
    private_stack_for,
    stack_settings,
)
from tests.support import (
    run_cli as _run_cli,
)


@dataclass(frozen=True, slots=True)
class Services:
    """The Kafka and Redis of this test session."""

    kafka_bootstrap: str
    redis_url: str
    home: Path
    kafka_libs_dir: Path
    stack: LocalStack | None  # set when the services are local processes LocalStack manages


def _docker_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _containers(stack: ExitStack) -> tuple[str, str]:
    """Start Kafka and Redis containers (closed by ``stack``); return their addresses."""
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.redis import RedisContainer

    kafka = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft())
    redis_container = stack.enter_context(RedisContainer("redis:7"))
    host = redis_container.get_container_host_ip()
    port = redis_container.get_exposed_port(6379)
    return str(kafka.get_bootstrap_server()), f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    explicit = "STREAMREC_KAFKA_BOOTSTRAP" in os.environ or "STREAMREC_REDIS_URL" in os.environ
    kafka = os.environ.get("STREAMREC_KAFKA_BOOTSTRAP", TEST_KAFKA_BOOTSTRAP)
    redis_url = os.environ.get("STREAMREC_REDIS_URL", TEST_REDIS_URL)
    base = load_settings(kafka_bootstrap=kafka, redis_url=redis_url)
    stack = LocalStack(base, timeout_s=120.0)
    managed: LocalStack | None = None
    with ExitStack() as cleanup, pytest.MonkeyPatch.context() as env:
        missing = missing_prerequisites(base)
        if stack.kafka.managed and stack.redis.managed and not missing:
            # Shared with concurrent sessions and `stack exec`: starts what is down, and the
            # last user out stops what was started this way.
            cleanup.enter_context(stack.lease())
            managed = stack
        else:
            down = [state for state in stack.status() if not state.running]
            if down and not explicit and _docker_answers():
                kafka, redis_url = _containers(cleanup)
            elif down:
                where = ", ".join(state.address for state in down)
                reason = f"missing {', '.join(missing)}" if missing else "not local addresses"
                raise RuntimeError(
                    f"tests need Kafka and Redis: {where} do not answer and cannot be started "
                    f"here ({reason}); run ./scripts/test or start a stack on these addresses"
                )
        env.setenv("STREAMREC_KAFKA_BOOTSTRAP", kafka)
        env.setenv("STREAMREC_REDIS_URL", redis_url)
        yield Services(kafka, redis_url, base.home, kafka_libs_dir(base), managed)


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Services) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture(scope="session")
def local_stack(services: Services) -> LocalStack:
    """The LocalStack running this session's (shared) services.

    Stopping these disturbs concurrent test runs on the same machine: tests that stop or
    restart services should use :func:`private_stack`. Its methods block: from async tests
    call ``await asyncio.to_thread(stack.stop_kafka)``.
    """
    if services.stack is None:
        pytest.skip("the services of this session are containers, not a local stack")
    return services.stack


@pytest.fixture
def private_stack(services: Services, tmp_path: Path) -> Iterator[LocalStack]:
    """A Kafka + Redis of this test alone (free ports, own home, shared jar cache), started.

    For tests that stop, kill or restart services: doing that to the shared session stack
    would break concurrent test runs. Stopped after the test. Set
    ``stack.redis_persistence = True`` before (re)starting Redis to keep its data (AOF).
    """
    with private_stack_for(tmp_path / "stack", services.kafka_libs_dir) as stack:
        yield stack


@pytest.fixture
async def private_settings(private_stack: LocalStack) -> Settings:
    """Settings on :func:`private_stack` with every topic created (thrown away with it)."""
    own = stack_settings(private_stack)
    await kafka_admin.create_topics(own)
    return own


@pytest.fixture
async def settings(services: Services) -> AsyncIterator[Settings]:
    """Settings with a unique topic and key prefix; topics created, all removed after."""
    tag = f"t{uuid.uuid4().hex[:8]}"
    test_settings = load_settings(
        kafka_bootstrap=services.kafka_bootstrap,
        redis_url=services.redis_url,
        topic_prefix=tag,
        key_prefix=tag,
        home=services.home,
        kafka_libs_dir=services.kafka_libs_dir,
        worker_metrics_port=0,
        server_metrics_port=0,
    )
    await kafka_admin.create_topics(test_settings)
    try:
        yield test_settings
    finally:
        try:
            await kafka_admin.delete_topics(test_settings)
        finally:
            await delete_prefix_keys(test_settings.redis_url, test_settings.key_prefix)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """An async Redis client on the session's Redis, closed after the test."""
    client = Redis.from_url(redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    """Run ``streamrec …`` in a subprocess (see :func:`tests.support.run_cli`)."""
    return _run_cli
