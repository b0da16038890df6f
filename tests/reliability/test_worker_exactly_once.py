"""Exactly-counted state through a worker SIGKILL and through a rebalance between two workers.

Each test replays the same stream twice against one set of topics: once uninterrupted (its own
consumer group and key prefix), once with the fault. The final Redis states must be identical,
up to float rounding of sums (batch boundaries change the order of additions).

Top-K trimming is switched off here (K above the number of items): which members survive a
trim depends on when trims happen, i.e. on batch boundaries and on how partitions interleave,
so trimmed lists are a bounded-memory approximation, not an exact count. Everything else —
every increment, list, set, offset — must come out the same.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from schemas.keyspace import Keyspace
from schemas.topics import Topic
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

pytestmark = pytest.mark.slow

N_EVENTS = 50_000
UNTRIMMED = {
    "covis_top_k": "10000",
    "popularity_top_n": "10000",
    "session_index_sessions_per_item": "10000",
    "batch_size": "200",
}


def _stream(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """Zipf-ish items, 2,000 users in sessions, event times one second apart per user."""
    rng = random.Random(seed)
    base = time.time() - 10 * 86400
    out = []
    kinds = ["view"] * 8 + ["click", "add_to_cart"]
    for i in range(n):
        user = f"u{rng.randrange(2000)}"
        item = f"i{int(rng.paretovariate(1.2)) % 3000}"
        out.append((user.encode(), outcome(user, item, base + i * 0.5, rng.choice(kinds))))
    return out


async def _applied_count(redis: Redis, keys: Keyspace) -> int:
    stored = await redis.hgetall(keys.offsets)
    return sum(int(v) + 1 for v in stored.values())


async def _reference_state(settings: Settings, redis: Redis, tmp_path: Path) -> dict[str, object]:
    """The same topics processed without faults, under another key prefix and group."""
    ref = settings.model_copy(update={"key_prefix": f"{settings.key_prefix}ref"})
    worker = start_worker(
        ref, tmp_path / "ref.log", group=f"{settings.topic_prefix}-ref", **UNTRIMMED
    )
    try:
        await wait_applied(ref, redis, within_s=240, procs=[worker])
    finally:
        stop_worker(worker)
    state = await dump_state(redis, ref.key_prefix)
    await delete_prefix_keys(ref.redis_url, ref.key_prefix)
    return state


async def test_sigkill_mid_stream_state_is_exact(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    keys = Keyspace(settings.key_prefix)
    events = _stream(N_EVENTS)
    # the last quarter is produced after the kill: there is work left for the restarted
    # worker however far the first one got (a matter of machine speed)
    await produce(settings, Topic.OUTCOMES, events[: N_EVENTS * 3 // 4])
    worker = start_worker(settings, tmp_path / "w1.log", **UNTRIMMED)
    try:
        deadline = time.monotonic() + 240
        while await _applied_count(redis, keys) < N_EVENTS // 2:
            assert worker.poll() is None, "worker died on its own"
            assert time.monotonic() < deadline, "worker made no progress"
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    finally:
        stop_worker(worker, signal.SIGKILL)
    await produce(settings, Topic.OUTCOMES, events[N_EVENTS * 3 // 4 :])
    restarted = start_worker(settings, tmp_path / "w2.log", **UNTRIMMED)
    try:
        await wait_applied(settings, redis, within_s=240, procs=[restarted])
    finally:
        stop_worker(restarted)
    faulted = await dump_state(redis, settings.key_prefix)
    assert_same_state(faulted, await _reference_state(settings, redis, tmp_path))


async def test_rebalance_between_two_workers_state_is_exact(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    keys = Keyspace(settings.key_prefix)
    await produce(settings, Topic.OUTCOMES, _stream(N_EVENTS // 2, seed=11))
    first = start_worker(settings, tmp_path / "a.log", **UNTRIMMED)
    second = None
    try:
        deadline = time.monotonic() + 240
        while await _applied_count(redis, keys) < N_EVENTS // 8:
            assert first.poll() is None
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # a second member joins: the group rebalances mid-stream, partitions move
        second = start_worker(settings, tmp_path / "b.log", **UNTRIMMED)
        await produce(settings, Topic.OUTCOMES, _stream(N_EVENTS // 2, seed=12))
        await asyncio.sleep(3)
        # and leaves again: another rebalance hands its partitions back
        stop_worker(second)
        await wait_applied(settings, redis, within_s=240, procs=[first])
    finally:
        stop_worker(first)
        if second is not None:
            stop_worker(second)
    faulted = await dump_state(redis, settings.key_prefix)
    assert_same_state(faulted, await _reference_state(settings, redis, tmp_path))
