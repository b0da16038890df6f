"""Freshness benchmark: how long from producing an event to an answer that reflects it.

On throwaway topic and key prefixes, with a real worker (``streamrec worker``) and a real
server (``streamrec serve``) as subprocesses:

1. Seed ``anchors`` anchor items A_j with one known co-visited neighbour B_j each (a few
   users view A_j then B_j) and wait until the worker has applied them.
2. Start a background load of ``rate`` outcome events per second (random users and items
   disjoint from the anchors), paced by a :class:`~messaging.producer.RateLimiter`.
3. Probes, one at a time: a user never seen before views A_j. Its Recommend answer is the
   cold popularity answer until the worker has applied that view; from then on it carries
   B_j with the reason "co-viewed with A_j". The probe's latency is the time from the
   produce call to the first answer with that reason, polled every ``poll_interval_s``.
4. Report p50/p95/p99/min/max of the reflected probes, the misses, the background rate
   actually achieved and the worker's backlog at the end; delete the topics and keys.

The figure includes the producer's linger, the worker's batch wait (``batch_within_s``) and
consumer fetch, the atomic Redis update, and up to one poll interval plus one RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from messaging import kafka_admin
from messaging.producer import EventProducer, ProducerConfig, RateLimiter
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.stack.children import Child, child_env, start_child

__all__ = ["FreshnessConfig", "reflects", "run_freshness_bench"]

log = logging.getLogger("streamrec.bench")

SEED_USERS_PER_ANCHOR = 3
MAX_CONSECUTIVE_MISSES = 3  # then the worker is not keeping up: stop instead of waiting on
CHUNK_S = 0.005  # the load is sent in chunks of rate × this
STOP_GRACE_S = 20.0


@dataclass(frozen=True, slots=True)
class FreshnessConfig:
    """What to measure and under which load."""

    rate: float = 2000.0
    probes: int = 50
    duration_s: float | None = None  # spread the probes over this long (None: back to back)
    poll_interval_s: float = 0.005
    probe_timeout_s: float = 10.0
    warmup_s: float = 2.0
    anchors: int = 20
    users: int = 20_000
    items: int = 5_000
    linger_ms: int = 5
    seed: int = 7

    def check(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"rate must be positive, got {self.rate}")
        if self.probes < 1:
            raise ConfigError(f"probes must be at least 1, got {self.probes}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"duration must be positive, got {self.duration_s}")
        if not 0 < self.poll_interval_s <= 1.0:
            raise ConfigError(f"poll interval must be in (0, 1] s, got {self.poll_interval_s}")


# --- subprocesses --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _start(name: str, argv: list[str], env: Mapping[str, str], log: Path) -> Child:
    return start_child(name, argv, env, log, owner="bench")


# --- the measurement -----------------------------------------------------------------------


def _event(user: str, item: str) -> bytes:
    return orjson.dumps({"user_id": user, "item_id": item, "event_type": "view", "ts": time.time()})


def _anchor(j: int) -> str:
    return f"anchor{j}"


def _neighbour(j: int) -> str:
    return f"neighbour{j}"


def reflects(reply: pb.RecommendResponse, anchor: str) -> bool:
    """True when the answer was personalised from a recent view of ``anchor``."""
    reason = f"co-viewed with {anchor}"
    return any(reason in item.reasons for item in reply.items)


class _Load:
    """Background outcome events at a steady rate; counts what it sent."""

    def __init__(self, producer: EventProducer, cfg: FreshnessConfig) -> None:
        self.producer = producer
        self.cfg = cfg
        self.sent = 0
        self.started = 0.0
        self.stopped = 0.0

    async def run(self) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed)
        chunk = max(1, round(cfg.rate * CHUNK_S))
        # a burst allowance of 50 ms makes up for sleeps that overshoot on a busy machine
        limiter = RateLimiter(cfg.rate, burst=max(chunk, round(cfg.rate * 0.05)))
        self.started = time.monotonic()
        try:
            while True:
                await limiter.acquire(chunk)
                for _ in range(chunk):
                    user = f"bg{rng.randrange(cfg.users)}"
                    item = f"it{int(rng.paretovariate(1.1)) % cfg.items}"
                    await self.producer.send_raw(Topic.OUTCOMES, _event(user, item), user.encode())
                self.sent += chunk
        finally:
            self.stopped = time.monotonic()

    @property
    def achieved_rate(self) -> float:
        elapsed = (self.stopped or time.monotonic()) - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _backlog(settings: Settings, redis: aioredis.Redis) -> int:
    """Messages on the consumed topics that the worker has not applied yet."""
    names = {settings.topic(t.value): t.value for t in (Topic.OUTCOMES, Topic.EXPOSURES)}
    ends = await kafka_admin.end_offsets(settings, list(names))
    stored = await asyncio.wait_for(
        redis.hgetall(Keyspace(settings.key_prefix).offsets), settings.network_timeout_s
    )
    applied = {_text(k): int(v) + 1 for k, v in stored.items()}
    return sum(
        max(0, end - applied.get(f"{names[topic]}|{partition}", 0))
        for (topic, partition), end in ends.items()
    )


async def _wait_caught_up(
    settings: Settings, redis: aioredis.Redis, worker: Child, within_s: float
) -> None:
    deadline = time.monotonic() + within_s
    while await _backlog(settings, redis) > 0:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"the worker did not apply the seed events within {within_s:g} s: "
                f"{worker.tail() or 'no output'}"
            )
        await asyncio.sleep(0.1)


async def _wait_serving(addr: str, server: Child, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    async with grpc.aio.insecure_channel(addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            server.check_alive()
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise UnavailableError(f"the server did not start within {within_s:g} s")
            await asyncio.sleep(0.2)


class _Prober:
    """Times probe events: produce, then poll Recommend until the answer reflects the event."""

    def __init__(
        self, producer: EventProducer, stub: pb_grpc.RecommenderAsyncStub, cfg: FreshnessConfig
    ) -> None:
        self.producer = producer
        self.stub = stub
        self.cfg = cfg
        self.polls = 0
        self.rpc_errors: dict[str, int] = {}

    async def _ask(self, request: pb.RecommendRequest) -> pb.RecommendResponse | None:
        """One Recommend call; None (counted) when it fails, so polling goes on."""
        self.polls += 1
        try:
            return await self.stub.Recommend(request, timeout=2.0)
        except grpc.aio.AioRpcError as exc:
            name = exc.code().name
            self.rpc_errors[name] = self.rpc_errors.get(name, 0) + 1
            return None

    async def probe(self, user: str, anchor: str) -> float | None:
        """Seconds from producing ``user`` viewing ``anchor`` to an answer reflecting it."""
        cfg = self.cfg
        request = pb.RecommendRequest(user_id=user, k=5)
        cold = await self._ask(request)
        if cold is not None and reflects(cold, anchor):
            raise UnavailableError(f"probe user {user} was not fresh: state left from a run?")
        started = time.perf_counter()
        await self.producer.send_raw(Topic.OUTCOMES, _event(user, anchor), user.encode())
        deadline = started + cfg.probe_timeout_s
        while True:
            reply = await self._ask(request)
            now = time.perf_counter()
            if reply is not None and reflects(reply, anchor):
                return now - started
            if now > deadline:
                return None
            await asyncio.sleep(cfg.poll_interval_s)


def _bench_settings(base: Settings, tag: str, home: Path) -> Settings:
    return base.model_copy(
        update={
            "topic_prefix": tag,
            "key_prefix": tag,
            "consumer_group": f"{tag}-worker",
            "grpc_addr": f"127.0.0.1:{_free_port()}",
            "worker_metrics_port": 0,
            "server_metrics_port": 0,
            "last_known_file": home / "last_known.json",
            "home": home,  # the children's working files (faust datadir) go with the run
        }
    )


async def run_freshness_bench(base: Settings, cfg: FreshnessConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); return the report as a dict."""
    cfg.check()
    tag = f"benchfresh-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="streamrec-freshness-") as tmp:
        home = Path(tmp)
        settings = _bench_settings(base, tag, home)
        await kafka_admin.create_topics(settings)
        redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.network_timeout_s,
            socket_connect_timeout=settings.network_timeout_s,
        )
        children: list[Child] = []
        try:
            env = child_env(settings)
            worker = _start("worker", ["worker", "--loglevel", "warning"], env, home / "w.log")
            children.append(worker)
            server = _start(
                "server",
                ["serve", "--addr", settings.grpc_addr, "--metrics-port", "0"],
                env,
                home / "s.log",
            )
            children.append(server)
            report = await _measure(settings, cfg, redis, worker, server)
            report["prefix"] = tag
            return report
        finally:
            for child in children:
                await asyncio.to_thread(child.stop, STOP_GRACE_S)
            await redis.aclose()
            with contextlib.suppress(UnavailableError, ConfigError):
                await kafka_admin.delete_topics(settings)
            await _delete_keys(settings)


async def _delete_keys(settings: Settings) -> None:
    redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=settings.network_timeout_s)
    try:
        async with asyncio.timeout(60):
            batch: list[Any] = []
            async for key in redis.scan_iter(match=Keyspace(settings.key_prefix).pattern):
                batch.append(key)
                if len(batch) >= 1000:
                    await redis.unlink(*batch)
                    batch.clear()
            if batch:
                await redis.unlink(*batch)
    finally:
        await redis.aclose()


async def _measure(
    settings: Settings,
    cfg: FreshnessConfig,
    redis: aioredis.Redis,
    worker: Child,
    server: Child,
) -> dict[str, Any]:
    producer = EventProducer(
        settings, ProducerConfig(linger_ms=cfg.linger_ms, client_id="streamrec-bench-freshness")
    )
    await producer.start()
    load = _Load(producer, cfg)
    load_task: asyncio.Task[None] | None = None
    try:
        for j in range(cfg.anchors):
            for u in range(SEED_USERS_PER_ANCHOR):
                user = f"seed{j}-{u}"
                for item in (_anchor(j), _neighbour(j)):
                    await producer.send_raw(Topic.OUTCOMES, _event(user, item), user.encode())
        await producer.flush()
        await _wait_caught_up(settings, redis, worker, within_s=120.0)
        await _wait_serving(settings.grpc_addr, server, within_s=60.0)
        log.info("worker applied the seed events; server serving; starting the load")

        load_task = asyncio.create_task(load.run())
        cpu_from, cpu_since = _cpu_seconds(worker.proc.pid), time.monotonic()
        await asyncio.sleep(cfg.warmup_s)
        latencies: list[float] = []
        missed = streak = 0
        interval = cfg.duration_s / cfg.probes if cfg.duration_s else None
        rng = random.Random(cfg.seed + 1)
        async with grpc.aio.insecure_channel(settings.grpc_addr) as channel:
            stub: pb_grpc.RecommenderAsyncStub = pb_grpc.RecommenderStub(channel)
            prober = _Prober(producer, stub, cfg)
            started = time.monotonic()
            for p in range(cfg.probes):
                if interval is not None:
                    await asyncio.sleep(max(0.0, started + p * interval - time.monotonic()))
                else:
                    await asyncio.sleep(rng.uniform(0.02, 0.1))
                if load_task.done():
                    load_task.result()  # raises what stopped the load
                worker.check_alive()
                server.check_alive()
                latency = await prober.probe(f"probe-{p}", _anchor(p % cfg.anchors))
                log.info(
                    "probe %d: %s, background %d sent",
                    p,
                    "missed" if latency is None else f"{latency * 1000:.1f} ms",
                    load.sent,
                )
                if latency is None:
                    missed += 1
                    streak += 1
                    if streak >= MAX_CONSECUTIVE_MISSES:
                        missed += cfg.probes - p - 1  # not taken: counted as missed
                        break
                else:
                    latencies.append(latency)
                    streak = 0
            if interval is not None and cfg.duration_s is not None:
                await asyncio.sleep(max(0.0, started + cfg.duration_s - time.monotonic()))
            measured_s = time.monotonic() - started
            cpu_to = _cpu_seconds(worker.proc.pid)
            worker_cpu = (
                (cpu_to - cpu_from) / (time.monotonic() - cpu_since)
                if cpu_from is not None and cpu_to is not None
                else None
            )
    finally:
        if load_task is not None:
            load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await load_task
        with contextlib.suppress(UnavailableError):
            await producer.stop()
    if not latencies:
        raise UnavailableError(
            f"no probe was reflected within {cfg.probe_timeout_s:g} s "
            f"(worker: {worker.tail() or 'no output'})"
        )
    backlog = await _backlog(settings, redis)
    ms = np.array(latencies) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "rate": load.achieved_rate,
        "target_rate": cfg.rate,
        "probes": cfg.probes,
        "reflected": len(latencies),
        "missed": missed,
        "polls": prober.polls,
        "rpc_errors": prober.rpc_errors,
        "background_events": load.sent,
        "measured_s": measured_s,
        "backlog_end": backlog,
        "worker_cpu": worker_cpu,  # cores the worker used under the load (1.0 = saturated)
        "loadavg_1m": os.getloadavg()[0],  # the machine's load: other processes compete
        "poll_interval_ms": cfg.poll_interval_s * 1000.0,
        "batch_within_ms": settings.batch_within_s * 1000.0,
        "batch_size": settings.batch_size,
        "partitions": settings.partitions,
        "config": asdict(cfg),
    }
