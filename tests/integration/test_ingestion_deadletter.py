"""Ingestion on the real broker: 10,000 events, a known 5% malformed in assorted ways.

Every good event must be applied, every bad one must be on the dead-letter topic with the
right reason and its source coordinates, and the counts must add up exactly.
"""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from pathlib import Path

import orjson
from redis.asyncio import Redis

from core.settings import Settings
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from tests.worker_support import (
    consume_all,
    outcome,
    produce,
    start_worker,
    stop_worker,
    wait_applied,
)

N_EVENTS = 10_000
N_BAD = N_EVENTS * 5 // 100


def _bad(kind: str, i: int, now: float) -> bytes:
    good = orjson.loads(outcome(f"u{i}", "item", now - 60))
    if kind == "not_json":
        return b"\x00\xffnot json " + str(i).encode()
    if kind == "truncated":
        return outcome(f"u{i}", "item", now - 60)[:-7]
    if kind == "wrong_types":
        return orjson.dumps({**good, "user_id": 12345, "ts": "yesterday"})
    if kind == "unknown_event_type":
        return orjson.dumps({**good, "event_type": "teleport"})
    if kind == "missing_field":
        return orjson.dumps({k: v for k, v in good.items() if k != "item_id"})
    if kind == "future_timestamp":
        return orjson.dumps({**good, "ts": now + 7 * 86400})
    if kind == "oversized":
        return orjson.dumps({**good, "session_id": "x" * (2 * 1024 * 1024)})
    if kind == "duplicate_key":  # orjson alone would keep the last one silently
        return orjson.dumps(good)[:-1] + b',"item_id":"other"}'
    if kind == "pii_email":
        return orjson.dumps({**good, "user_id": f"user{i}@example.com"})
    if kind == "pii_phone":
        return orjson.dumps({**good, "user_id": f"+44 20 7946 {i % 10_000:04d}"})
    if kind == "control_character_id":
        return orjson.dumps({**good, "item_id": f"item\x07{i}"})
    if kind == "whitespace_id":
        return orjson.dumps({**good, "user_id": "   "})
    raise AssertionError(kind)


EXPECTED_REASON = {
    "not_json": "not_json",
    "truncated": "not_json",
    "wrong_types": "invalid",
    "unknown_event_type": "unknown_event_type",
    "missing_field": "invalid",
    "future_timestamp": "future_timestamp",
    "oversized": "oversized",
    "duplicate_key": "duplicate_key",
    "pii_email": "pii",  # STREAMREC_PII_POLICY defaults to reject
    "pii_phone": "pii",
    "control_character_id": "invalid",
    "whitespace_id": "invalid",
}


async def test_ten_thousand_events_five_percent_bad(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    rng = random.Random(3)
    now = time.time()
    kinds = list(EXPECTED_REASON)
    bad_at = set(rng.sample(range(N_EVENTS), N_BAD))
    messages: list[tuple[bytes | None, bytes]] = []
    expected = Counter[str]()
    for i in range(N_EVENTS):
        user = f"u{i}"
        if i in bad_at:
            kind = kinds[i % len(kinds)]
            expected[EXPECTED_REASON[kind]] += 1
            messages.append((user.encode(), _bad(kind, i, now)))
        else:
            messages.append((user.encode(), outcome(user, f"i{i % 97}", now - 60 + i * 1e-3)))
    await produce(settings, Topic.OUTCOMES, messages, max_request_size=4 * 1024 * 1024)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        await wait_applied(settings, redis, [Topic.OUTCOMES], within_s=180, procs=[worker])
    finally:
        stop_worker(worker)

    keys = Keyspace(settings.key_prefix)
    # every good event applied exactly once: one user per event, one last_active each
    good_users = 0
    async for _ in redis.scan_iter(match=keys.user_meta("*"), count=1000):
        good_users += 1
    assert good_users == N_EVENTS - N_BAD
    letters = [orjson.loads(v) for v in await consume_all(settings, Topic.DEADLETTER)]
    assert len(letters) == N_BAD
    assert Counter(d["reason"] for d in letters) == expected
    for letter in letters:
        assert letter["source_topic"] == settings.topic("outcomes")
        assert letter["partition"] >= 0 and letter["offset"] >= 0
        assert letter["error"]
        if letter["reason"] == "pii":  # the reason names the field, never the id itself
            assert "user_id looks like" in letter["error"] and "7946" not in letter["error"]
        raw = base64.b64decode(letter["raw_b64"])
        if letter["reason"] == "oversized":
            assert letter["truncated"] and len(raw) == settings.max_event_bytes
        else:
            assert not letter.get("truncated", False)
    # the dead-letter counter of the worker's metrics is by reason; the test above checks
    # the envelopes, the unit tests check the counter labels
