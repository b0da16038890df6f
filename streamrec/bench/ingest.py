"""``streamrec bench ingest``: full processor vs a bare faust agent, side by side, one run.

Produces N synthetic outcome events (Zipf item popularity, users with sessions of varying
length) to throwaway topics, then alternates runs of a bare faust agent that only counts the
messages and of the full worker app (decode, plan, one atomic Redis apply per batch), each in
its own consumer group over the same topic and broker. Throughput is measured from the first
to the last message (start-up and group join excluded). The headline figures are those of
the median round by ratio (of an even count, the lower middle one): its full and bare rates
and their ratio, measured side by side; every round's ratio and the min / median / max of
each series come with them. Then it replays the same stream shifted in time (the same
catalog and users) and reports how much Redis memory grew.

Over the same first-to-last-message window it also accounts CPU time per event: this
process's (the faust app, bare or full, runs in it) and the Redis server's (``INFO cpu``, the
whole server: other clients' load counts too). With the worker's utilisation (CPU seconds per
wall second) they show where a ratio comes from: the Python side's cost per event against
the bare agent's, and how much of another core Redis takes.

With ``baseline`` (the default) every round also runs the full worker with the apply script
as it was before the issue 22 CPU work (setting ``apply_script=baseline``, same plan, same
state) on a fresh key prefix, so Redis CPU per event of today's script and of the baseline
come from one run: ``redis_us_per_event`` has the min / median / max over the rounds of both
and their ratio per round.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from core.settings import Settings
from messaging import kafka_admin
from messaging.producer import EventProducer, ProducerConfig
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.bench.stats import median_round, spread
from streams.app import create_app


@dataclass(frozen=True, slots=True)
class IngestBenchConfig:
    events: int = 100_000
    items: int = 20_000
    users: int = 10_000
    rounds: int = 2
    zipf_s: float = 1.1
    seed: int = 42
    timeout_s: float = 600.0
    #: also run the full worker with the baseline apply script each round (issue 22)
    baseline: bool = True


def synthetic_events(cfg: IngestBenchConfig, start_ts: float) -> list[tuple[bytes, bytes]]:
    """Zipf items; each user browses sessions of 1–30 events, 30 s apart, 1 h between them."""
    rng = random.Random(cfg.seed)
    weights = [1.0 / (rank**cfg.zipf_s) for rank in range(1, cfg.items + 1)]
    cumulative: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    user_clock = {u: start_ts + rng.random() * 3600 for u in range(cfg.users)}
    kinds = ["view"] * 12 + ["click"] * 4 + ["add_to_cart", "purchase"]
    out: list[tuple[bytes, bytes]] = []
    while len(out) < cfg.events:
        user = rng.randrange(cfg.users)
        session = rng.randint(1, 30)
        ts = user_clock[user]
        for _ in range(min(session, cfg.events - len(out))):
            item = _bisect(cumulative, rng.random() * total)
            ts += 30.0
            uid = f"u{user}"
            out.append(
                (
                    uid.encode(),
                    orjson.dumps(
                        {
                            "user_id": uid,
                            "item_id": f"i{item}",
                            "event_type": rng.choice(kinds),
                            "ts": round(ts, 3),
                        }
                    ),
                )
            )
        user_clock[user] = ts + 3600.0
    return out


def _bisect(cumulative: list[float], x: float) -> int:
    lo, hi = 0, len(cumulative) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if cumulative[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


async def _produce(settings: Settings, events: list[tuple[bytes, bytes]]) -> None:
    async with EventProducer(settings, ProducerConfig()) as producer:
        for key, value in events:
            await producer.send_raw(Topic.OUTCOMES, value, key=key)
        await producer.flush()


@dataclass(frozen=True, slots=True)
class CpuClock:
    """CPU seconds used so far by this process (all its threads, so a utilisation can pass
    1.0) and by the Redis server, at one moment."""

    process_s: float
    redis_s: float

    @classmethod
    async def read(cls, client: aioredis.Redis) -> CpuClock:
        info = await client.info("cpu")
        redis_s = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cls(time.process_time(), redis_s)


def cpu_per_event(
    start: CpuClock, end: CpuClock, *, events: int, elapsed_s: float
) -> dict[str, float]:
    """CPU µs per event of the worker process and of Redis, and the worker's utilisation."""
    worker_s, redis_s = end.process_s - start.process_s, end.redis_s - start.redis_s
    per_event = 1e6 / events if events > 0 else 0.0
    return {
        "worker_us": worker_s * per_event,
        "redis_us": redis_s * per_event,
        "worker_utilisation": worker_s / elapsed_s if elapsed_s > 0 else 0.0,
    }


async def _consume_run(
    settings: Settings,
    client: aioredis.Redis,
    *,
    bare: bool,
    expected: int,
    timeout_s: float,
) -> dict[str, Any]:
    app_id = f"{settings.topic_prefix}-{'bare' if bare else 'full'}-{uuid.uuid4().hex[:6]}"
    app = create_app(settings, bare=bare, app_id=app_id)
    counts: dict[str, Any] = app.conf.streamrec_counts
    started = time.perf_counter()
    await app.start()
    first_at: float | None = None
    first_count = 0
    try:
        first_cpu = await CpuClock.read(client)  # replaced at the first message
        while counts["messages"] < expected:
            await asyncio.sleep(0.005)
            if first_at is None and counts["messages"] > 0:
                first_at, first_count = time.perf_counter(), counts["messages"]
                first_cpu = await CpuClock.read(client)
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{'bare' if bare else 'full'} run did not finish")
        elapsed = time.perf_counter() - (first_at or started)
        last_cpu = await CpuClock.read(client)
    finally:
        await app.stop()
    measured = expected - first_count
    return {
        "events_per_s": measured / elapsed if elapsed > 0 else 0.0,
        "roundtrips": float(counts.get("roundtrips", 0)),
        "messages": float(counts["messages"]),
        "cpu": cpu_per_event(first_cpu, last_cpu, events=measured, elapsed_s=elapsed),
    }


async def _memory(client: aioredis.Redis, keys: Keyspace) -> dict[str, float]:
    """Bytes of every key of the prefix, split into item-side and user-side families."""
    item_bytes = user_bytes = other = 0
    items: set[str] = set()
    users: set[str] = set()
    async for raw in client.scan_iter(match=keys.pattern, count=2000):
        key = raw.decode()
        size = int(await client.memory_usage(key, samples=0) or 0)
        rest = key[len(keys.prefix) + 1 :]
        if rest.startswith("cv:"):
            item_bytes += size
            items.add(rest[3:])
        elif rest.startswith("u:"):
            user_bytes += size
            users.add(rest.split(":")[1])
        else:
            other += size
    return {
        "total": float(item_bytes + user_bytes + other),
        "item_bytes": float(item_bytes),
        "user_bytes": float(user_bytes),
        "items": float(len(items)),
        "users": float(len(users)),
        "other": float(other),
    }


async def run_ingest_bench(base: Settings, cfg: IngestBenchConfig) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={"topic_prefix": f"bench-{run_id}", "key_prefix": f"bench-{run_id}"}
    )
    keys = Keyspace(settings.key_prefix)
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=30)
    await kafka_admin.create_topics(settings)
    try:
        start_ts = time.time() - 30 * 86400
        events = synthetic_events(cfg, start_ts)
        await _produce(settings, events)
        bare: list[float] = []
        full: list[float] = []
        cpu: list[dict[str, dict[str, float]]] = []
        redis_us: list[float] = []
        baseline_redis_us: list[float] = []
        roundtrips = 0.0
        for _ in range(cfg.rounds):
            bare_run = await _consume_run(
                settings, client, bare=True, expected=len(events), timeout_s=cfg.timeout_s
            )
            bare.append(bare_run["events_per_s"])
            if cfg.baseline:  # the same stream into an empty keyspace, the old apply script
                await _delete(client, keys)
                old = await _consume_run(
                    settings.model_copy(update={"apply_script": "baseline"}),
                    client,
                    bare=False,
                    expected=len(events),
                    timeout_s=cfg.timeout_s,
                )
                baseline_redis_us.append(old["cpu"]["redis_us"])
            await _delete(client, keys)
            run = await _consume_run(
                settings, client, bare=False, expected=len(events), timeout_s=cfg.timeout_s
            )
            full.append(run["events_per_s"])
            redis_us.append(run["cpu"]["redis_us"])
            round_cpu = {"full": run["cpu"], "bare": bare_run["cpu"]}
            if cfg.baseline:
                round_cpu["baseline"] = old["cpu"]
            cpu.append(round_cpu)
            roundtrips = run["roundtrips"]
        memory_once = await _memory(client, keys)
        flat = await _memory_flatness(base, cfg, client)
    finally:
        await _delete(client, keys)
        await client.aclose()
        await kafka_admin.delete_topics(settings)
    ratios = [f / b if b else 0.0 for f, b in zip(full, bare, strict=True)]
    middle = median_round(ratios)  # its full and bare rates are reported together
    return {
        "events": len(events),
        "rounds": cfg.rounds,
        "events_per_s": full[middle],
        "bare_events_per_s": bare[middle],
        "ratio": ratios[middle],
        "ratio_runs": spread(ratios),
        "full": spread(full),
        "bare": spread(bare),
        "ratio_per_round": ratios,
        "redis_roundtrips_per_event": roundtrips / len(events),
        "cpu_per_event": cpu[middle],
        "redis_us_per_event": _redis_us_report(redis_us, baseline_redis_us),
        "batch_size": settings.batch_size,
        "bytes_per_item": memory_once["item_bytes"] / max(1.0, memory_once["items"]),
        "bytes_per_user": memory_once["user_bytes"] / max(1.0, memory_once["users"]),
        "redis_bytes_after_stream": memory_once["total"],
        **flat,
    }


def _redis_us_report(current: list[float], baseline: list[float]) -> dict[str, Any]:
    """Redis CPU µs per event of today's apply script and of the baseline, over the rounds."""
    report: dict[str, Any] = {"current": spread(current), "current_per_round": current}
    if baseline:
        report["baseline"] = spread(baseline)
        report["baseline_per_round"] = baseline
        # per round (the two runs are back to back): how many times less CPU today's uses
        report["reduction_per_round"] = [
            b / c if c else 0.0 for b, c in zip(baseline, current, strict=True)
        ]
        report["reduction"] = spread(report["reduction_per_round"])
    return report


async def _memory_flatness(
    base: Settings, cfg: IngestBenchConfig, client: aioredis.Redis
) -> dict[str, float]:
    """Memory after a stream and after the same stream twice as long, same catalog and users.

    Users get enough events (200 each) to reach every per-user bound, as long-lived users do;
    with fewer events per user the per-user lists are still filling up and memory grows with
    them until their caps.
    """
    run_id = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={"topic_prefix": f"benchmem-{run_id}", "key_prefix": f"benchmem-{run_id}"}
    )
    keys = Keyspace(settings.key_prefix)
    half = max(1000, cfg.events // 2)
    mem_cfg = IngestBenchConfig(
        events=half, items=cfg.items, users=max(10, half // 200), seed=cfg.seed + 1
    )
    await kafka_admin.create_topics(settings)
    try:
        start_ts = time.time() - 60 * 86400
        await _produce(settings, synthetic_events(mem_cfg, start_ts))
        await _consume_run(settings, client, bare=False, expected=half, timeout_s=cfg.timeout_s)
        once = await _memory(client, keys)
        # the same stream again, later in time: twice as long in total
        await _produce(settings, synthetic_events(mem_cfg, start_ts + 20 * 86400))
        await _consume_run(settings, client, bare=False, expected=2 * half, timeout_s=cfg.timeout_s)
        twice = await _memory(client, keys)
    finally:
        await _delete(client, keys)
        await kafka_admin.delete_topics(settings)
    return {
        "memory_check_events": float(half),
        "memory_check_users": float(mem_cfg.users),
        "redis_bytes_stream": once["total"],
        "redis_bytes_stream_twice": twice["total"],
        "memory_growth": twice["total"] / max(1.0, once["total"]) - 1.0,
    }


async def _delete(client: aioredis.Redis, keys: Keyspace) -> None:
    batch: list[Any] = []
    async for key in client.scan_iter(match=keys.pattern, count=2000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch.clear()
    if batch:
        await client.unlink(*batch)
