"""The real worker on the real broker and Redis: hand-computed state, exposure join, catalog."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from core.settings import Settings
from schemas.keyspace import Keyspace, segment_id
from schemas.topics import Topic
from streams.processor import choose_landmark, session_index_over
from tests.worker_support import (
    consume_all,
    outcome,
    produce,
    start_worker,
    stop_worker,
    wait_applied,
)

# A half-life so long that the forward-decay factor is 1 within 1e-9 over these few seconds,
# so the expected weights are plain numbers computed by hand.
NO_DECAY = {"covis_half_life_s": "1e12", "popularity_half_life_s": "1e12"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scores(pairs: Any) -> dict[str, float]:
    return {_text(m): float(s) for m, s in pairs}


def _close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert set(actual) == set(expected), (actual, expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-6), (key, actual, expected)


async def test_hand_computed_state(settings: Settings, redis: Redis, tmp_path: Path) -> None:
    keys = Keyspace(settings.key_prefix)
    t = choose_landmark(time.time() - 3 * 86400) + 3600.0  # well in the past, fixed landmark
    ctx = {"tenant": "shop", "surface": "pdp", "locale": "en"}
    items = [
        (b"A", orjson.dumps({"item_id": "A", "categories": ["shoes"], "ts": t - 100})),
        (b"Z", orjson.dumps({"item_id": "Z", "available": False, "ts": t - 100})),
    ]
    outcomes = [
        # u1 browses A, B, C; u2 browses A then C (clicks); u3 dismisses B
        (b"u1", outcome("u1", "A", t, "view", context=ctx)),
        (b"u1", outcome("u1", "B", t + 10, "view")),
        (b"u1", outcome("u1", "C", t + 20, "view")),
        (b"u2", outcome("u2", "A", t + 5, "click")),
        (b"u2", outcome("u2", "C", t + 15, "click")),
        (b"u3", outcome("u3", "B", t + 30, "dismiss")),
        # an attributed click that arrives before its exposure, and one after
        (b"u4", outcome("u4", "Y", t + 40, "click", request_id="r-early")),
        (b"u4", b"not json at all"),
    ]
    exposures = [
        (
            b"u4",
            orjson.dumps(
                {
                    "request_id": rid,
                    "user_id": "u4",
                    "ts": t + 35,
                    "items": [{"item_id": "X", "rank": 1}, {"item_id": "Y", "rank": 2}],
                    "context": {"surface": "home"},
                    "variant": "treatment",
                }
            ),
        )
        for rid in ("r-early", "r-late")
    ]
    worker = start_worker(settings, tmp_path / "worker.log", **NO_DECAY)
    try:
        await produce(settings, Topic.ITEMS, items)
        await wait_applied(settings, redis, [Topic.ITEMS], procs=[worker])
        await produce(settings, Topic.OUTCOMES, outcomes)
        await wait_applied(settings, redis, [Topic.OUTCOMES], procs=[worker])
        await produce(settings, Topic.EXPOSURES, exposures)
        await wait_applied(settings, redis, [Topic.EXPOSURES], procs=[worker])
        await produce(
            settings,
            Topic.OUTCOMES,
            [(b"u4", outcome("u4", "X", t + 50, "click", request_id="r-late"))],
        )
        await wait_applied(settings, redis, [Topic.OUTCOMES], procs=[worker])
    finally:
        stop_worker(worker)

    # co-visitation, W=5, distance decay 0.8, backward weight 0.5, view = click = 1:
    # u1: A→B 1 (B→A .5); C: B→C 1 (C→B .5), A→C .8 (C→A .4); u2: A→C 1 (C→A .5)
    _close(
        _scores(await redis.zrange(keys.covis("A"), 0, -1, withscores=True)), {"B": 1.0, "C": 1.8}
    )
    _close(
        _scores(await redis.zrange(keys.covis("B"), 0, -1, withscores=True)), {"A": 0.5, "C": 1.0}
    )
    _close(
        _scores(await redis.zrange(keys.covis("C"), 0, -1, withscores=True)), {"B": 0.5, "A": 0.9}
    )
    # u4's clicks on X and Y are 10 s apart: Y→X 1, X→Y .5
    _close(_scores(await redis.zrange(keys.covis("Y"), 0, -1, withscores=True)), {"X": 1.0})
    # popularity: dismiss weighs 0; the segment list only has the one event with a context
    _close(
        _scores(await redis.zrange(keys.popularity(), 0, -1, withscores=True)),
        {"A": 2.0, "B": 1.0, "C": 2.0, "X": 1.0, "Y": 1.0},
    )
    _close(
        _scores(
            await redis.zrange(
                keys.popularity(segment_id("shop", "pdp", "en")), 0, -1, withscores=True
            )
        ),
        {"A": 1.0},
    )
    # user features
    recent = [_text(e).split("|")[1] for e in await redis.lrange(keys.user_recent("u1"), 0, -1)]
    assert recent == ["C", "B", "A"]
    assert await redis.lrange(keys.user_recent("u3"), 0, -1) == []  # dismiss is no anchor
    assert _scores(await redis.zrange(keys.user_seen("u3"), 0, -1, withscores=True)) == {
        "B": pytest.approx(t + 30)
    }
    assert float(await redis.hget(keys.user_affinity("u1"), "shoes") or 0) == pytest.approx(1.0)
    assert float(await redis.hget(keys.user_meta("u1"), "last_active") or 0) == pytest.approx(
        t + 20
    )
    for key in (keys.user_recent("u1"), keys.user_seen("u1"), keys.user_meta("u1")):
        assert 0 < await redis.ttl(key) <= settings.user_ttl_s
    # catalog
    assert await redis.smembers(keys.unavailable_items) == {b"Z"}
    assert await redis.hget(keys.item_categories, "A") == b"shoes"
    # exposure join: the early click joined when its exposure arrived, the late one at once
    sv = {_text(k): int(v) for k, v in (await redis.hgetall(keys.surface_variant_ctr)).items()}
    assert sv["home|treatment|req"] == 2
    assert sv["home|treatment|imp"] == 4
    assert sv["home|treatment|clk"] == 2
    assert sv["home|treatment|pos"] == 2 + 1  # Y at rank 2, X at rank 1
    assert sv["join|attempt"] == 2 and sv["join|ok"] == 2
    # the bad message is on the dead-letter topic with its reason and coordinates
    letters = [orjson.loads(v) for v in await consume_all(settings, Topic.DEADLETTER)]
    assert [(d["reason"], d["source_topic"]) for d in letters] == [
        ("not_json", settings.topic("outcomes"))
    ]


async def test_session_index_matches_a_rebuild_and_stays_bounded(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """The worker's incremental ``sn:{item}`` equals the index rebuilt from the same events.

    Rebuilt: every user with a positive-weight event on the item → its newest such ts, ranked
    newest first. The worker keeps S..S+S/8 of them (ZADD GT, trims past the slack): its
    newest S — all a request reads — are exactly the rebuild's, whatever order the partitions
    interleave in, and everything it keeps is in the rebuild.
    """
    keys = Keyspace(settings.key_prefix)
    keep = 8
    rng = random.Random(18)
    t = time.time() - 3600.0
    items = ["hot", "warm", "cold", "rare"]
    weights = [8, 4, 2, 1]
    events: list[tuple[str, str, float, str]] = []
    for n in range(400):
        user = f"s{rng.randrange(60)}"
        item = rng.choices(items, weights)[0]
        kind = "dismiss" if rng.random() < 0.1 else rng.choice(["view", "click"])
        events.append((user, item, round(t + n * 1.5, 3), kind))
    worker = start_worker(
        settings, tmp_path / "worker.log", session_index_sessions_per_item=str(keep)
    )
    try:
        await produce(
            settings,
            Topic.OUTCOMES,
            [(u.encode(), outcome(u, i, ts, kind)) for u, i, ts, kind in events],
        )
        await wait_applied(settings, redis, [Topic.OUTCOMES], procs=[worker])
    finally:
        stop_worker(worker)

    for item in items:
        rebuilt: dict[str, float] = {}
        for user, it, ts, kind in events:
            if it == item and kind != "dismiss":
                rebuilt[user] = max(rebuilt.get(user, ts), ts)
        ranked = sorted(rebuilt.items(), key=lambda p: (-p[1], p[0]))
        stored = _scores(await redis.zrevrange(keys.session_index(item), 0, -1, withscores=True))
        order = sorted(stored.items(), key=lambda p: (-p[1], p[0]))
        assert [u for u, _ in order[:keep]] == [u for u, _ in ranked[:keep]], item
        _close(dict(order[:keep]), dict(ranked[:keep]))
        assert set(stored) <= set(rebuilt), item
        assert min(len(rebuilt), keep) <= len(stored) <= session_index_over(keep), item
        assert 0 < await redis.ttl(keys.session_index(item)) <= settings.user_ttl_s
