"""Helpers for tests that run real workers: start/stop `streamrec worker`, produce, wait."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka.structs import TopicPartition
from redis.asyncio import Redis

from core import kafka_clients
from core.settings import Settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.stack.children import child_env
from tests.support import REPO, STREAMREC


def worker_env(settings: Settings, group: str | None = None, **overrides: str) -> dict[str, str]:
    """Environment for a worker subprocess that sees the same topics and keys as ``settings``."""
    own = {
        "consumer_group": group or f"{settings.topic_prefix}-workers",
        "worker_metrics_port": "0",
    }
    return child_env(settings, **{**own, **overrides})


def run_status(
    settings: Settings, *args: str, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """``streamrec status ARGS`` against the topics, keys and worker group of ``settings``."""
    return subprocess.run(
        [str(STREAMREC), "status", *args],
        env=worker_env(settings, None, **overrides),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def start_worker(
    settings: Settings, log: Path, group: str | None = None, **overrides: str
) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        [str(STREAMREC), "worker", "--loglevel", "warning"],
        env=worker_env(settings, group, **overrides),
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


def stop_worker(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30
) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


CLIENT_ID = "streamrec-test"


def outcome(user: str, item: str, ts: float, event_type: str = "view", **extra: object) -> bytes:
    return orjson.dumps(
        {"user_id": user, "item_id": item, "event_type": event_type, "ts": ts, **extra}
    )


async def produce(
    settings: Settings,
    topic: Topic,
    messages: Iterable[tuple[bytes | None, bytes]],
    *,
    max_request_size: int = 1_048_576,
) -> int:
    producer = kafka_clients.producer(
        settings,
        client_id=CLIENT_ID,
        request_timeout_s=30,
        linger_ms=5,
        max_request_size=max_request_size,
        acks="all",
    )
    await producer.start()
    sent = 0
    try:
        futures = []
        for key, value in messages:
            futures.append(await producer.send(settings.topic(topic.value), value, key=key))
            sent += 1
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def end_offsets(settings: Settings, topics: Sequence[Topic]) -> dict[tuple[str, int], int]:
    """End offset of every partition of ``topics`` (logical topic name, partition)."""
    wanted = {settings.topic(t.value): t.value for t in topics}
    infos = [i for i in await kafka_admin.describe_topics(settings) if i.name in wanted]
    tps = [TopicPartition(i.name, p) for i in infos for p in range(i.partitions)]
    consumer = kafka_clients.consumer(settings, client_id=CLIENT_ID)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(wanted[tp.topic], tp.partition): off for tp, off in ends.items()}


async def wait_applied(
    settings: Settings,
    redis: Redis,
    topics: Sequence[Topic] = (Topic.OUTCOMES,),
    *,
    within_s: float = 120.0,
    procs: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Wait until the stored offsets cover every message currently on ``topics``."""
    ends = await end_offsets(settings, topics)
    keys = Keyspace(settings.key_prefix)
    deadline = time.monotonic() + within_s
    while True:
        stored = await redis.hgetall(keys.offsets)
        done = all(
            end == 0 or int(stored.get(f"{t}|{p}".encode(), -1)) >= end - 1
            for (t, p), end in ends.items()
        )
        if done:
            return
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not applied in {within_s}s: ends={ends} stored={stored}")
        await asyncio.sleep(0.2)


async def consume_all(settings: Settings, topic: Topic, within_s: float = 60.0) -> list[bytes]:
    """Every message currently on a topic (from the beginning to the end offsets)."""
    ends = await end_offsets(settings, [topic])
    total = sum(ends.values())
    consumer = kafka_clients.consumer(
        settings,
        settings.topic(topic.value),
        client_id=CLIENT_ID,
        request_timeout_s=30,  # joins a group: the broker may hold the join a few seconds
        auto_offset_reset="earliest",
        group_id=f"read-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + within_s
        while len(out) < total and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(r.value for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return out


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def dump_state(redis: Redis, key_prefix: str) -> dict[str, object]:
    """Every key of a prefix with its value, the prefix stripped (to compare two runs)."""
    out: dict[str, object] = {}
    async for raw in redis.scan_iter(match=f"{key_prefix}:*", count=1000):
        key = _s(raw)
        short = key[len(key_prefix) + 1 :]
        kind = _s(await redis.type(key))
        if kind == "zset":
            pairs: Any = await redis.zrange(key, 0, -1, withscores=True)
            out[short] = {_s(m): float(sc) for m, sc in pairs}
        elif kind == "hash":
            out[short] = {_s(f): _s(v) for f, v in (await redis.hgetall(key)).items()}
        elif kind == "list":
            out[short] = [_s(v) for v in await redis.lrange(key, 0, -1)]
        elif kind == "set":
            out[short] = sorted(_s(v) for v in await redis.smembers(key))
        elif kind == "string":
            out[short] = _s(await redis.get(key) or b"")
    return out


def assert_same_state(a: Mapping[str, object], b: Mapping[str, object], rel: float = 1e-9) -> None:
    """States equal up to float rounding of sums (batch boundaries change summation order).

    Not compared: ``meta`` (last write time) and the monitors' per-process wall-clock data
    (``stats:*`` windows saved at shutdown, ``hb:*`` heartbeats).
    """

    def compared(state: Mapping[str, object]) -> set[str]:
        return {k for k in state if k != "meta" and not k.startswith(("stats:", "hb:"))}

    assert compared(a) == compared(b), compared(a) ^ compared(b)
    for key in compared(a):
        va, vb = a[key], b[key]
        if (
            isinstance(va, dict)
            and isinstance(vb, dict)
            and va
            and isinstance(next(iter(va.values())), float)
        ):
            assert set(va) == set(vb), (key, set(va) ^ set(vb))
            for member, score in va.items():
                other = vb[member]
                assert abs(score - other) <= rel * max(1.0, abs(score)), (key, member, score, other)
        elif key.startswith("u:") and key.endswith(":a"):
            assert isinstance(va, dict) and isinstance(vb, dict)
            assert set(va) == set(vb), key
            for f in va:
                assert abs(float(va[f]) - float(vb[f])) <= rel * max(1.0, abs(float(va[f])))
        else:
            assert va == vb, (key, va, vb)
