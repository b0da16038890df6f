"""Order-independent item state: two interleavings of the same partitions serve the same rows.

The same events, split into 4 partitions by user, are applied in batches that take a random
number of events from each partition (a different random draw per run, as fetches and
rebalances would). Co-visitation rows keep K + slack neighbours (``covis_top_k_slack``) and
popularity lists N members while fewer are served, so the served top of every row must be
the same in both runs, and equal to an untrimmed run's, as long as the true top K never
fall below the stored bound during the replay. Without slack they differ.

``python -m tests.integration.test_order_independence`` (with the test stack up, e.g. under
``streamrec stack exec``) prints the measurement quoted in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from core.settings import Settings, load_settings
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.pipeline import BatchProcessor, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig
from streams.state_store import StateStore
from tests.support import delete_prefix_keys
from tests.worker_support import outcome

PARTS = 4
#: served rows: key (prefix stripped) → [(member, score)] best first
Rows = dict[str, list[tuple[str, float]]]


def stream(n: int, *, items: int, users: int, seed: int) -> dict[int, list[RawMessage]]:
    """Zipf-ish items, users in sessions, a third of the events with a segment context.

    Split into ``PARTS`` partitions by user, as the producers key them; event times are fixed
    relative to a UTC midnight, so every run computes the same weights.
    """
    rng = random.Random(seed)
    base = math.floor(time.time() / 86400) * 86400 - 10 * 86400
    kinds = ["view"] * 8 + ["click", "add_to_cart"]
    events = []
    for i in range(n):
        user = f"u{rng.randrange(users)}"
        item = f"i{int(rng.paretovariate(1.2)) % items}"
        extra = {"context": {"surface": rng.choice(["home", "pdp"])}} if i % 3 == 0 else {}
        events.append((user, outcome(user, item, base + i * 0.5, rng.choice(kinds), **extra)))
    return partitioned(events)


def clustered(n: int, *, seed: int) -> dict[int, list[RawMessage]]:
    """Each of 400 users browses one of 10 clusters of 24 items (clusters Zipf-popular, items
    uniform inside), 3 % of the clicks going to a 2,000-item noise catalog: every item's top
    neighbours are its cluster mates, and the noise (single co-visits) fills the tail."""
    rng = random.Random(seed)
    base = math.floor(time.time() / 86400) * 86400 - 10 * 86400
    home = {u: min(int(rng.paretovariate(1.0)) - 1, 9) for u in range(400)}
    events = []
    for i in range(n):
        u = rng.randrange(400)
        if rng.random() < 0.03:
            item = f"n{rng.randrange(2000)}"
        else:
            item = f"c{home[u]}-{rng.randrange(24)}"
        extra = {"context": {"surface": rng.choice(["home", "pdp"])}} if i % 3 == 0 else {}
        events.append((f"u{u}", outcome(f"u{u}", item, base + i * 0.5, "view", **extra)))
    return partitioned(events)


def partitioned(events: list[tuple[str, bytes]]) -> dict[int, list[RawMessage]]:
    """(user, outcome) events into ``PARTS`` partitions by user, in order."""
    by: dict[int, list[RawMessage]] = {p: [] for p in range(PARTS)}
    for user, value in events:
        p = sum(user.encode()) % PARTS
        by[p].append(RawMessage(Topic.OUTCOMES, "t.outcomes", p, len(by[p]), user.encode(), value))
    return by


def sessions_file(path: str) -> dict[int, list[RawMessage]]:  # pragma: no cover - measurement
    """A ``SessionId ItemId Time`` TSV (rsc15) as click outcomes of the sessions, time-ordered."""
    with open(path, encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle][1:]
    rows.sort(key=lambda r: float(r[2]))
    return partitioned(
        [(f"s{s}", outcome(f"s{s}", item, float(ts), "click")) for s, item, ts in rows]
    )


async def replay(
    url: str,
    prefix: str,
    by: Mapping[int, list[RawMessage]],
    config: ProcessorConfig,
    seed: int,
    *,
    script: str = "current",
) -> None:
    """Apply every partition in order, interleaved by batches of 0..60 events per partition."""
    keys = Keyspace(prefix)
    store = await StateStore.connect(url, keys, script=script)

    async def sink(_letters: object) -> None:
        raise AssertionError("no dead letters expected")

    proc = BatchProcessor(
        store, BatchPlanner(keys, config), sink, max_event_bytes=65536, max_future_skew_s=300
    )
    rng = random.Random(seed)
    pos = dict.fromkeys(by, 0)
    try:
        while any(pos[p] < len(by[p]) for p in by):
            batch: list[RawMessage] = []
            for p in by:
                n = rng.randint(0, 60)
                batch += by[p][pos[p] : pos[p] + n]
                pos[p] += n
            await proc.process(batch, now=time.time())
    finally:
        await store.aclose()


async def served(redis: Redis, prefix: str, covis_k: int, popularity_n: int) -> Rows:
    """The top ``covis_k`` of every co-visitation row and ``popularity_n`` of every popularity
    list, read by rank as the server reads them."""
    out: Rows = {}
    for family, top in (("cv:*", covis_k), ("pop", popularity_n), ("pop:*", popularity_n)):
        async for raw in redis.scan_iter(match=f"{prefix}:{family}", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            pairs: Any = await redis.zrevrange(key, 0, top - 1, withscores=True)
            out[key[len(prefix) + 1 :]] = [(_text(m), float(s)) for m, s in pairs]
    return out


def differing(a: Rows, b: Rows, rel: float = 1e-9) -> list[str]:
    """Rows whose served members or scores differ (scores up to float rounding of sums)."""
    return [key for key in sorted(set(a) | set(b)) if _gap(a.get(key, []), b.get(key, [])) > rel]


def reordered(a: Rows, b: Rows) -> list[str]:
    """Rows whose served members (in rank order) differ: what a request would see change."""
    return [
        key
        for key in sorted(set(a) | set(b))
        if [m for m, _ in a.get(key, [])] != [m for m, _ in b.get(key, [])]
    ]


def _gap(ra: list[tuple[str, float]], rb: list[tuple[str, float]]) -> float:
    """Largest relative score difference of a member in both rows; inf if the members differ."""
    da, db = dict(ra), dict(rb)
    if set(da) != set(db):
        return math.inf
    return max((abs(s - db[m]) / max(abs(s), 1e-300) for m, s in da.items()), default=0.0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def compare(
    settings: Settings,
    redis: Redis,
    by: Mapping[int, list[RawMessage]],
    config: ProcessorConfig,
    *,
    served_n: int,
    seeds: tuple[int, int] = (1, 2),
) -> tuple[Rows, Rows, Rows]:
    """Served rows of two interleavings (``seeds``) and of an untrimmed run."""
    untrimmed = dataclasses.replace(config, top_k_slack=10**6, popularity_top_n=10**6)
    runs: list[Rows] = []
    for name, cfg, seed in (("a", config, seeds[0]), ("b", config, seeds[1]), ("u", untrimmed, 0)):
        prefix = f"{settings.key_prefix}{name}"
        try:
            await replay(settings.redis_url, prefix, by, cfg, seed)
            runs.append(await served(redis, prefix, config.top_k, served_n))
            if name != "u" and cfg.covis_stored <= 128:  # never past the bound, not even once
                async for key in redis.scan_iter(match=f"{prefix}:cv:*", count=1000):
                    assert await redis.zcard(key) <= cfg.covis_stored, key
                    if cfg.hot_row_pairs == 0:  # hot rows are skiplists on purpose (issue 22)
                        assert _text(await redis.object("encoding", key)) == "listpack", key
        finally:
            await delete_prefix_keys(settings.redis_url, prefix)
    return runs[0], runs[1], runs[2]


async def test_two_interleavings_serve_the_same_top_k(settings: Settings, redis: Redis) -> None:
    """K = 20 served of 20 + 16 stored, popularity 60 served of 300 stored, on a stream whose
    rows have a clear top K (:func:`clustered`): its true top K stay within the stored bound
    throughout (checked: both runs equal the untrimmed run). Trimming at K (slack 0, the old
    rule) makes rows differ between the same two runs."""
    by = clustered(12_000, seed=18)
    config = ProcessorConfig(top_k=20, top_k_slack=16, popularity_top_n=300)
    a, b, untrimmed = await compare(settings, redis, by, config, served_n=60)
    assert sum(len(r) == 20 for k, r in a.items() if k.startswith("cv:")) >= 200  # trimmed rows
    assert differing(a, b) == []
    assert differing(a, untrimmed) == []

    at_k = dataclasses.replace(config, top_k_slack=0, popularity_top_n=60)
    a0, b0, _ = await compare(settings, redis, by, at_k, served_n=60)
    assert differing(a0, b0), "without slack the interleaving shows (or the stream is too easy)"


async def _measure(source: str, slacks: list[int]) -> None:  # pragma: no cover - measurement
    settings = load_settings(key_prefix=f"measure{os.getpid()}")
    redis = Redis.from_url(settings.redis_url)
    if source.isdigit():
        by = stream(int(source), items=3000, users=2000, seed=7)
    else:
        by = sessions_file(source)
    print(f"{source}: {sum(map(len, by.values()))} events in {PARTS} partitions")
    served_n = settings.serving_popularity_top_n
    base = ProcessorConfig.from_settings(settings)
    read = settings.ranker_neighbours_per_anchor
    try:
        for slack in slacks:
            config = dataclasses.replace(base, top_k_slack=slack)
            a, b, untrimmed = await compare(settings, redis, by, config, served_n=served_n)
            for label, prefix, top in (
                (f"cv top {config.top_k}", "cv:", config.top_k),
                (f"cv top {read}", "cv:", read),
                (f"pop top {served_n}", "pop", served_n),
            ):

                def rows(run: Rows, prefix: str = prefix, top: int = top) -> Rows:
                    return {k: v[:top] for k, v in run.items() if k.startswith(prefix)}

                ra, rb, ru = rows(a), rows(b), rows(untrimmed)
                print(
                    f"K={config.top_k} slack={slack} {label}: rows {len(ra)} "
                    f"(full {sum(len(v) == top for v in ra.values())}); a vs b: "
                    f"{_summary(ra, rb)}; a vs untrimmed: {_summary(ra, ru)}",
                    flush=True,
                )
    finally:
        await redis.aclose()


def _summary(a: Rows, b: Rows) -> str:  # pragma: no cover - measurement
    gaps = sorted(g for k in set(a) | set(b) if (g := _gap(a.get(k, []), b.get(k, []))) < math.inf)
    return (
        f"{len(reordered(a, b))} rows list other members or order, {len(differing(a, b))} "
        f"differ at all (members, or a score beyond 1e-9 relative; largest score gap with "
        f"the same members {gaps[-1] if gaps else 0:.1e})"
    )


if __name__ == "__main__":  # pragma: no cover
    # python -m tests.integration.test_order_independence [EVENTS | SESSIONS.tsv] [SLACK ...]
    source = sys.argv[1] if len(sys.argv) > 1 else "70000"
    asyncio.run(_measure(source, [int(x) for x in sys.argv[2:]] or [0, 27]))


async def test_a_row_never_passes_its_bound_inside_a_batch(
    settings: Settings, redis: Redis
) -> None:
    """Batches of up to 60 events per partition bring a full row (127 = K + slack) dozens of
    new neighbours at once: the row must stay within 127 members and in the listpack encoding
    (a zset that once passes 128 stays a skiplist, ~4x the bytes, after its trim)."""
    base = math.floor(time.time() / 86400) * 86400 - 86400
    events = []
    for u in range(600):  # each user: the hub, then an item of their own
        events.append((f"u{u}", outcome(f"u{u}", "hub", base + 2 * u, "view")))
        events.append((f"u{u}", outcome(f"u{u}", f"x{u}", base + 2 * u + 1, "view")))
    config = ProcessorConfig(hot_row_pairs=0)  # the listpack path, one member at a time
    keys = Keyspace(settings.key_prefix)
    await replay(settings.redis_url, settings.key_prefix, partitioned(events), config, seed=3)
    hub = keys.covis("hub")
    assert await redis.zcard(hub) == config.covis_stored == 127
    assert _text(await redis.object("encoding", hub)) == "listpack"
    newest = [_text(m) for m in await redis.zrevrange(hub, 0, 2)]  # forward decay: newest first
    assert newest == ["x599", "x598", "x597"]
    listpack_row = await redis.zrange(hub, 0, -1, withscores=True)

    # the hot-row path (issue 22): the hub takes dozens of increments per batch, so it is
    # updated as a skiplist; the same bound, the same members, the same scores (exactly)
    hot = ProcessorConfig(hot_row_pairs=16)
    prefix = f"{settings.key_prefix}hot"
    try:
        await replay(settings.redis_url, prefix, partitioned(events), hot, seed=3)
        hot_hub = Keyspace(prefix).covis("hub")
        assert _text(await redis.object("encoding", hot_hub)) == "skiplist"
        assert await redis.zrange(hot_hub, 0, -1, withscores=True) == listpack_row
    finally:
        await delete_prefix_keys(settings.redis_url, prefix)


async def test_hot_rows_give_the_same_state_as_the_listpack_path(
    settings: Settings, redis: Redis
) -> None:
    """Every co-visitation row and popularity list, all members with their exact scores, is
    the same whether rows given many increments at once take the skiplist path (issue 22,
    ``apply_hot_row_pairs``) or every row takes the listpack path, and the same under the
    baseline apply script (the one before issue 22), on the same interleaving."""
    by = stream(6_000, items=400, users=300, seed=11)
    small = ProcessorConfig(top_k=10, top_k_slack=5, hot_row_pairs=0)  # rows fill up and trim
    runs: list[Rows] = []
    for name, cfg, script in (
        ("l", small, "current"),
        ("h", dataclasses.replace(small, hot_row_pairs=4), "current"),
        ("o", small, "baseline"),
    ):
        prefix = f"{settings.key_prefix}{name}"
        try:
            await replay(settings.redis_url, prefix, by, cfg, seed=5, script=script)
            runs.append(await served(redis, prefix, 10**6, 10**6))
            if name == "h":
                encodings = [
                    _text(await redis.object("encoding", key))
                    async for key in redis.scan_iter(match=f"{prefix}:cv:*", count=1000)
                ]
                assert "skiplist" in encodings  # the hot path was taken
        finally:
            await delete_prefix_keys(settings.redis_url, prefix)
    listpack, hot, baseline = runs
    assert sum(k.startswith("cv:") and len(r) == 15 for k, r in listpack.items()) > 20
    assert hot == listpack  # exact scores, not within a tolerance
    assert baseline == listpack
