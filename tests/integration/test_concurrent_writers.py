"""Two processors writing the same partitions at once (a rebalance overlap) on real Redis.

A rebalance hands partitions from one worker to another while the first still holds fetched
messages; the second starts from the last committed offset, behind what was applied. Both
then plan and apply concurrently. The offset guard, the atomic read snapshot and the cache
invalidation must keep the final state identical to one processor's, for any interleaving.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.pipeline import BatchProcessor, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig
from streams.state_store import StateStore
from tests.reliability.test_worker_exactly_once import _stream
from tests.support import delete_prefix_keys
from tests.worker_support import assert_same_state, dump_state, outcome

# trimming by rank off (top K, popularity N, the session index's slack past its newest S):
# what survives a trim depends on batch boundaries (see test_worker_exactly_once and
# test_order_independence for what trimmed rows keep exact)
CONFIG = ProcessorConfig(top_k=100_000, popularity_top_n=100_000, session_index_max=100_000)
PARTS = 4


async def _processor(url: str, prefix: str) -> BatchProcessor:
    keys = Keyspace(prefix)
    store = await StateStore.connect(url, keys)

    async def sink(_letters: object) -> None:
        raise AssertionError("no dead letters expected")

    return BatchProcessor(
        store, BatchPlanner(keys, CONFIG), sink, max_event_bytes=65536, max_future_skew_s=300
    )


def _by_partition(n: int, seed: int) -> dict[int, list[RawMessage]]:
    by: dict[int, list[RawMessage]] = {p: [] for p in range(PARTS)}
    for key, value in _stream(n, seed=seed):
        p = sum(key) % PARTS
        by[p].append(RawMessage(Topic.OUTCOMES, "t.outcomes", p, len(by[p]), key, value))
    return by


def _take(
    rng: random.Random,
    by: dict[int, list[RawMessage]],
    pos: dict[int, int],
    parts: tuple[int, ...],
    most: int = 60,
) -> list[RawMessage]:
    batch: list[RawMessage] = []
    for p in parts:
        n = rng.randint(0, most)
        batch += by[p][pos[p] : pos[p] + n]
        pos[p] += n
    return batch


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
async def test_overlapping_owners_give_the_single_owner_state(
    settings: Settings, redis: Redis, seed: int
) -> None:
    rng = random.Random(seed)
    by = _by_partition(8_000, seed)
    everything = tuple(range(PARTS))
    ref_prefix, prefix = f"{settings.key_prefix}ref", settings.key_prefix
    ref = await _processor(settings.redis_url, ref_prefix)
    a = await _processor(settings.redis_url, prefix)
    b = await _processor(settings.redis_url, prefix)
    try:
        pos = dict.fromkeys(everything, 0)
        while any(pos[p] < len(by[p]) for p in everything):
            await ref.process(_take(rng, by, pos, everything), now=time.time())

        pos = dict.fromkeys(everything, 0)
        for _ in range(30):  # A owns everything
            await a.process(_take(rng, by, pos, everything), now=time.time())
        a.on_rebalance()
        b.on_rebalance()  # B takes partitions 2 and 3 from a committed offset behind A's
        b_pos = {p: max(0, pos[p] - rng.randint(0, 80)) for p in (2, 3)}
        for step in range(120):
            a_batch = _take(rng, by, pos, (0, 1))
            if step < 6:  # A still drains messages of 2 and 3 it had fetched
                a_batch += _take(rng, by, pos, (2, 3), most=30)
            await asyncio.gather(
                a.process(a_batch, now=time.time()),
                b.process(_take(rng, by, b_pos, (2, 3)), now=time.time()),
            )
        a.on_rebalance()
        b.on_rebalance()  # B leaves; A resumes 2 and 3 from B's committed offset, behind
        for p in (2, 3):
            pos[p] = max(0, b_pos[p] - rng.randint(0, 80))
        while any(pos[p] < len(by[p]) for p in everything):
            await a.process(_take(rng, by, pos, everything), now=time.time())

        assert_same_state(await dump_state(redis, prefix), await dump_state(redis, ref_prefix))
    finally:
        for proc in (ref, a, b):
            await proc.store.aclose()
        await delete_prefix_keys(settings.redis_url, ref_prefix)


async def test_batch_boundaries_do_not_change_the_state(settings: Settings, redis: Redis) -> None:
    """Regression (the rebalance test's rare one-pair co-visitation difference): a rebalance
    only changes where batches are cut. A user's second event in one batch used to see one
    history entry more than the worker reads back from Redis and paired with it.
    """
    ref_prefix, prefix = f"{settings.key_prefix}ref", settings.key_prefix
    ref = await _processor(settings.redis_url, ref_prefix)
    cut = await _processor(settings.redis_url, prefix)
    depth = cut.cache.depth  # what a batch reads back per user
    base = time.time() - 3600
    # the oldest entry sits exactly at the read depth behind repeats of one item
    items = ["deep"] + ["a"] * (depth - 1) + ["b", "c"]
    messages = [
        RawMessage(Topic.OUTCOMES, "t.outcomes", 0, i, b"u", outcome("u", item, base + i))
        for i, item in enumerate(items)
    ]
    try:
        for msg in messages:  # one event per batch
            await ref.process([msg], now=time.time())
        await cut.process(messages[:depth], now=time.time())
        cut.cache.clear()  # as after a rebalance: the next batch reads the history back
        await cut.process(messages[depth:], now=time.time())
        state = await dump_state(redis, prefix)
        assert "c" not in state["cv:deep"]  # type: ignore[operator]
        assert_same_state(state, await dump_state(redis, ref_prefix))
    finally:
        for proc in (ref, cut):
            await proc.store.aclose()
        await delete_prefix_keys(settings.redis_url, ref_prefix)
