"""Faults under load: Redis and Kafka restarts, a request burst, garbage on every input.

Each test states what must hold afterwards — nothing lost, nothing counted twice, no crash —
and checks it against a known answer (hand-built expectations, or the state of the same
topics processed without the fault; see test_worker_exactly_once for why top-K trimming is
off in those comparisons).

The restart tests run on a Kafka + Redis of this module alone (``fault_stack``): restarting
the session's shared test stack would break concurrent test runs on the machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.settings import Settings
from streamrec.stack import LocalStack
from tests.conftest import Services
from tests.integration.serving_support import recommender, running, serving_settings
from tests.reliability.fault_support import (
    UNTRIMMED,
    log_text,
    private_stack_for,
    recent_items,
    settings_on,
    stream,
    wait_progress,
)
from tests.support import delete_prefix_keys
from tests.worker_support import (
    assert_same_state,
    dump_state,
    outcome,
    produce,
    start_worker,
    stop_worker,
    wait_applied,
)

N_EVENTS = 12_000


@pytest.fixture(scope="module")
def fault_stack(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A Kafka + Redis of this module alone, free to be stopped and restarted."""
    with private_stack_for(tmp_path_factory.mktemp("faults"), services.kafka_libs_dir) as stack:
        yield stack


@pytest.fixture
async def fault_settings(fault_stack: LocalStack) -> AsyncIterator[Settings]:
    async with settings_on(fault_stack) as own:
        yield own


@pytest.fixture
async def fault_redis(fault_stack: LocalStack) -> AsyncIterator[Redis]:
    client = Redis.from_url(
        fault_stack.settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0
    )
    try:
        yield client
    finally:
        await client.aclose()


async def _start_redis(stack: LocalStack, redis: Redis) -> None:
    """Start Redis again; drop the test client's pooled connections to the old process."""
    await asyncio.to_thread(stack.start_redis)
    await redis.connection_pool.disconnect()


def _fresh_users(tag: str, n: int, ts: float) -> tuple[list[tuple[bytes, bytes]], dict[str, list[str]]]:
    """``n`` new users, one view each: the messages and each user's expected recent items."""
    messages, expected = [], {}
    for i in range(n):
        user = f"{tag}{i}"
        messages.append((user.encode(), outcome(user, f"i{i % 50}", ts + i * 1e-3)))
        expected[user] = [f"i{i % 50}"]
    return messages, expected


async def _reference(
    settings: Settings, redis: Redis, tmp_path: Path, name: str
) -> dict[str, object]:
    """The same topics processed from the start without a fault (own group and key prefix)."""
    ref = settings.model_copy(update={"key_prefix": f"{settings.key_prefix}{name}"})
    worker = start_worker(
        ref, tmp_path / f"{name}.log", group=f"{settings.topic_prefix}-{name}", **UNTRIMMED
    )
    try:
        await wait_applied(ref, redis, within_s=60, procs=[worker])
    finally:
        stop_worker(worker)
    state = await dump_state(redis, ref.key_prefix)
    await delete_prefix_keys(ref.redis_url, ref.key_prefix)
    return state


# --- a. Redis restart under load ----------------------------------------------------------


@pytest.mark.slow
async def test_redis_restart_without_persistence_worker_resumes_and_replay_rebuilds(
    fault_stack: LocalStack, fault_settings: Settings, fault_redis: Redis, tmp_path: Path
) -> None:
    settings, redis = fault_settings, fault_redis
    keys = Keyspace(settings.key_prefix)
    await produce(settings, Topic.OUTCOMES, stream(N_EVENTS, seed=21))
    worker = start_worker(settings, tmp_path / "w1.log", **UNTRIMMED)
    now = time.time()
    try:
        await wait_progress(redis, keys, N_EVENTS // 3, worker)
        cfg = serving_settings(settings, tmp_path)
        async with running(cfg, log_exposures=False) as (_server, channel):
            stub = recommender(channel)
            request = pb.RecommendRequest(user_id="u1", k=5)
            assert not (await stub.Recommend(request)).degraded

            await asyncio.to_thread(fault_stack.stop_redis)
            # the worker retries its batch (not acked) while Redis is away; the server falls
            # back to its in-process caches and still answers
            during, expected = _fresh_users("gap", 200, now)
            await produce(settings, Topic.OUTCOMES, during)
            for _ in range(5):
                reply = await stub.Recommend(request)
                assert reply.degraded and reply.items
                assert reply.fallback_stage != pb.FALLBACK_STAGE_NONE
                await asyncio.sleep(0.2)
            assert worker.poll() is None, "worker died while Redis was away"
            await _start_redis(fault_stack, redis)

            after, more = _fresh_users("post", 200, now + 1)
            expected.update(more)
            # a pair so that a fresh user gets a personalised answer from post-restart state
            pairs = [
                (f"pair{i}".encode(), outcome(f"pair{i}", item, now + 2 + j))
                for i in range(5)
                for j, item in enumerate(("anchor", "neighbour"))
            ]
            probe = [(b"probe", outcome("probe", "anchor", now + 10))]
            await produce(settings, Topic.OUTCOMES, after + pairs + probe)
            await wait_applied(settings, redis, within_s=60, procs=[worker])
            assert worker.poll() is None
            assert "retrying" in log_text(tmp_path / "w1.log")

            # everything not applied before the restart is applied after it, exactly once
            assert await recent_items(redis, keys, list(expected)) == expected

            async def personalised() -> pb.RecommendResponse | None:
                reply = await stub.Recommend(pb.RecommendRequest(user_id="probe", k=3))
                reasons = [r for item in reply.items for r in item.reasons]
                return reply if "co-viewed with anchor" in reasons else None

            deadline = time.monotonic() + 10
            while (answer := await personalised()) is None:
                assert time.monotonic() < deadline, "no personalised answer after the restart"
                await asyncio.sleep(0.1)
            assert not answer.degraded and answer.items[0].item_id == "neighbour"
    finally:
        stop_worker(worker)

    # Persistence off: what was written before the restart is gone. The contract is that a
    # replay of the retained topics from the start rebuilds it: flush the prefix, new group.
    await delete_prefix_keys(settings.redis_url, settings.key_prefix)
    replay = start_worker(
        settings, tmp_path / "replay.log", group=f"{settings.topic_prefix}-replay", **UNTRIMMED
    )
    try:
        await wait_applied(settings, redis, within_s=60, procs=[replay])
    finally:
        stop_worker(replay)
    rebuilt = await dump_state(redis, settings.key_prefix)
    assert_same_state(rebuilt, await _reference(settings, redis, tmp_path, "ref"))


@pytest.mark.slow
async def test_redis_restart_with_aof_state_is_exact_without_replay(
    fault_stack: LocalStack, fault_settings: Settings, fault_redis: Redis, tmp_path: Path
) -> None:
    settings, redis = fault_settings, fault_redis
    keys = Keyspace(settings.key_prefix)
    await asyncio.to_thread(fault_stack.stop_redis)
    fault_stack.redis_persistence = True  # appendonly yes, appendfsync always
    await _start_redis(fault_stack, redis)
    try:
        await produce(settings, Topic.OUTCOMES, stream(N_EVENTS, seed=22))
        worker = start_worker(settings, tmp_path / "w.log", **UNTRIMMED)
        try:
            killed_at = await wait_progress(redis, keys, N_EVENTS // 3, worker)
            assert killed_at < N_EVENTS, "the restart came too late to test anything"
            # SIGKILL: no shutdown save; only what the AOF fsynced before each reply survives
            await asyncio.to_thread(fault_stack.stop_redis, graceful=False)
            await asyncio.sleep(1.0)
            assert worker.poll() is None, "worker died while Redis was away"
            await _start_redis(fault_stack, redis)
            assert await redis.hlen(keys.offsets) > 0, "the AOF did not bring the state back"
            await wait_applied(settings, redis, within_s=60, procs=[worker])
        finally:
            stop_worker(worker)
        assert "retrying" in log_text(tmp_path / "w.log")
        faulted = await dump_state(redis, settings.key_prefix)
        assert_same_state(faulted, await _reference(settings, redis, tmp_path, "ref"))
    finally:
        await asyncio.to_thread(fault_stack.stop_redis)
        fault_stack.redis_persistence = False
        await _start_redis(fault_stack, redis)
