"""Serving benchmark: the real server against a bare grpc.aio echo server, in one run.

1. Populate Redis under a throwaway key prefix: ``items`` items (categories, top-20
   co-visitation lists), global and segment popularity, ``users`` users with 1–50 recent
   items and a seen set.
2. Start the real server (exposure logging off unless asked) and take one real answer; start
   a bare grpc.aio server whose Recommend returns that answer (same response size).
3. Drive each with ``concurrency`` concurrent calls for ``duration_s`` from a client in a
   separate process (this machine has 2 cores: one for the server, one for the client),
   after a warm-up, alternating echo and real server for ``rounds`` rounds. Report the median
   round's ratio, rps and latency percentiles of both (of an even count of rounds, the lower
   middle one), the per-round ratios' min / median / max in ``ratio_runs``, Redis round trips
   per request of the real server,
   and the serving process's CPU time per request of each (``cpu_ms_per_request``,
   ``echo_cpu_ms_per_request``: steadier than rps on a machine shared with other work).
   ``redis_client`` picks the server's request-path Redis client (``wire`` or ``redis-py``,
   see :mod:`serving.state_reader`); ``both`` measures the two in every round, in
   alternating order after the echo side, and adds per client (``clients``) the min /
   median / max over rounds of rps, p50, p99 and CPU per request, and per round their
   ratios redis-py / wire (``redis_py_vs_wire``). The top-level figures are those of the
   first client named. Every real-server side starts with the server's in-process caches
   empty (the warm-up refills them); ``cache_resets`` counts how often they were emptied
   during the measured sides (a lost connection, or redis-py dropping a timed-out one).
4. With ``rate`` > 0, drive both servers again *open loop*: the same ``concurrency`` callers
   together offer ``rate`` requests/s on a fixed schedule (each caller sends every
   ``concurrency / rate`` s, callers staggered), and a latency is measured from the scheduled
   send time, so a server that falls behind is charged its queueing (no coordinated omission).
   Closed-loop callers measure capacity: each waits for its answer before the next call, so at
   saturation latency is ``concurrency / rps`` by Little's law whatever the server does.
   Open loop measures latency at a given load, as backend services calling on page views
   produce it.
5. Exploration (issue 20): ``populate`` seeds the new-item pool ``it:new`` with the newest
   ``exploration_pool_max`` catalog items (with a few impressions and clicks each, and
   per-surface CTR counters), so the server's Thompson-sampling slots actually run.
   ``exploration`` ``on`` serves with the settings' ``exploration_share``, ``off`` with share
   0, ``both`` measures the two in every round on the same server (alternating order; the
   share is switched between sides, the off side neither reads the pool nor builds arm
   tables), reports each (``exploration_modes``, top-level figures: ``on``) and
   ``serve_cpu_ratio``: per round the server's CPU per request on / off, min / median / max
   (plus ``exploration_on_vs_off``: the same-round ratios of rps, p50, p99, CPU).
   ``explored_items_per_answer`` shows how many exploration slots the answers carried.
6. Delete the throwaway keys.

Ratios, not absolute numbers, are what to compare across machines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import multiprocessing
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
import redis.asyncio as aioredis

from core.errors import UnavailableError
from core.settings import Settings
from messaging import kafka_admin
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.events import EXPLORING_REASON
from schemas.keyspace import Keyspace, segment_id
from serving.exploration import ExplorationConfig
from serving.server import Server, settle_heap
from serving.shared_state import SharedState
from serving.state_reader import REQUEST_CLIENTS, RequestClientKind, StateReader
from streamrec.bench.stats import median_round, spread

NEIGHBOURS = 20
CATEGORIES = 50
POPULAR_N = 200
TENANTS = ("t0", "t1", "t2")
SURFACES = ("home", "pdp")
REQUEST_POOL = 2000  # at least; one request per synthetic user when there are more users
RedisClientChoice = Literal["wire", "redis-py", "both"]
REDIS_CLIENT_CHOICES: tuple[RedisClientChoice, ...] = ("wire", "redis-py", "both")
ExplorationChoice = Literal["on", "off", "both"]
EXPLORATION_CHOICES: tuple[ExplorationChoice, ...] = ("on", "off", "both")
ExplorationMode = Literal["on", "off"]
#: seeded CTR of the surfaces and the pool items (the exploration prior's mean, 5 %)
SEEDED_CTR = 0.05


@dataclass(frozen=True, slots=True)
class BenchConfig:
    items: int = 100_000
    users: int = 10_000
    concurrency: int = 50
    duration_s: float = 10.0
    warmup_s: float = 2.0
    k: int = 10
    with_exposures: bool = False
    seed: int = 7
    #: offered requests/s of the open-loop phase (0 = no open-loop phase)
    rate: float = 0.0
    #: closed-loop rounds, each measuring the echo server and then the real server
    rounds: int = 3
    #: the server's request-path Redis client; ``both``: each of them in every round
    redis_client: RedisClientChoice = "wire"
    #: exploration slots served (``on``: the settings' share), off, or both in every round
    exploration: ExplorationChoice = "on"
    #: new-item pool seeded for exploration (the server reads its newest exploration_pool_max)
    pool_items: int = 500

    @property
    def clients(self) -> tuple[RequestClientKind, ...]:
        return REQUEST_CLIENTS if self.redis_client == "both" else (self.redis_client,)

    @property
    def exploration_modes(self) -> tuple[ExplorationMode, ...]:
        return ("on", "off") if self.exploration == "both" else (self.exploration,)


async def populate(redis: aioredis.Redis, keys: Keyspace, cfg: BenchConfig, now: float) -> None:
    """Write a synthetic state in the format the stream processor writes."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.items
    ids = [f"i{i}" for i in range(n)]
    chunk = 2000
    for start in range(0, n, chunk):
        pipe = redis.pipeline(transaction=False)
        pipe.hset(
            keys.item_categories,
            mapping={ids[i]: f"c{i % CATEGORIES}" for i in range(start, min(n, start + chunk))},
        )
        for i in range(start, min(n, start + chunk)):
            local = (i + rng.integers(1, n, size=NEIGHBOURS // 2)) % n
            popular = rng.zipf(1.3, size=NEIGHBOURS // 2) % n
            weights = np.sort(rng.random(NEIGHBOURS))[::-1] * 100.0
            members = [int(x) for x in np.concatenate([local, popular]) if x != i]
            pipe.zadd(
                keys.covis(ids[i]),
                {ids[m]: float(w) for m, w in zip(members, weights, strict=False)},
            )
        await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    pipe.incr(keys.catalog_version)
    pipe.zadd(keys.popularity(), {ids[r]: 1000.0 / (r + 1) for r in range(min(POPULAR_N, n))})
    for tenant in TENANTS:
        for surface in SURFACES:
            picks = rng.permutation(min(5 * POPULAR_N, n))[:POPULAR_N]
            seg = keys.popularity(segment_id(tenant, surface, ""))
            pipe.zadd(seg, {ids[int(p)]: 1000.0 / (r + 1) for r, p in enumerate(picks)})
    pipe.hset(keys.meta, mapping={"t0": "0", "last_write": repr(now)})
    await pipe.execute()
    await seed_new_items(redis, keys, cfg, now, rng)
    for start in range(0, cfg.users, 1000):
        pipe = redis.pipeline(transaction=False)
        for u in range(start, min(cfg.users, start + 1000)):
            length = int(rng.integers(1, 51))
            history = (rng.zipf(1.2, size=length) - 1) % n
            entries = [f"{now - 60.0 * j:.3f}|{ids[int(h)]}" for j, h in enumerate(history)]
            pipe.rpush(keys.user_recent(f"u{u}"), *entries)
            pipe.zadd(
                keys.user_seen(f"u{u}"),
                {ids[int(h)]: now - 60.0 * j for j, h in enumerate(history)},
            )
        await pipe.execute()


async def seed_new_items(
    redis: aioredis.Redis, keys: Keyspace, cfg: BenchConfig, now: float, rng: np.random.Generator
) -> None:
    """The new-item pool as the worker writes it: the newest ``pool_items`` catalog items at
    their announcement ts, each with 0-30 impressions and clicks at :data:`SEEDED_CTR`, and
    the surfaces' exposure-join counters at the same CTR (so few arms are filtered out)."""
    n = min(cfg.pool_items, cfg.items)
    if n <= 0:
        return
    pool = [f"i{cfg.items - 1 - j}" for j in range(n)]
    impressions = rng.integers(0, 31, size=n)
    clicks = rng.binomial(impressions, SEEDED_CTR)
    pipe = redis.pipeline(transaction=False)
    pipe.zadd(keys.new_items, {item: now - 60.0 * j for j, item in enumerate(pool)})
    pipe.zadd(
        keys.item_impressions,
        {item: int(m) for item, m in zip(pool, impressions, strict=True) if m},
    )
    pipe.zadd(keys.item_clicks, {item: int(c) for item, c in zip(pool, clicks, strict=True) if c})
    shown = 100_000
    for surface in SURFACES:
        pipe.hset(
            keys.surface_variant_ctr,
            mapping={
                f"{surface}|control|imp": shown,
                f"{surface}|control|clk": int(shown * SEEDED_CTR),
            },
        )
    await pipe.execute()


async def delete_prefix(redis: aioredis.Redis, keys: Keyspace) -> int:
    deleted = 0
    batch: list[Any] = []
    async for key in redis.scan_iter(match=keys.pattern, count=5000):
        batch.append(key)
        if len(batch) >= 2000:
            deleted += await redis.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted


# --- load generator (runs in a child process) --------------------------------------------------
def _requests(cfg: BenchConfig) -> list[bytes]:
    rnd = random.Random(cfg.seed)
    out = []
    for _ in range(max(REQUEST_POOL, cfg.users)):
        ctx = pb.Context(tenant=rnd.choice(TENANTS), surface=rnd.choice(SURFACES))
        request = pb.RecommendRequest(user_id=f"u{rnd.randrange(cfg.users)}", k=cfg.k, context=ctx)
        out.append(request.SerializeToString())
    return out


async def _drive(addr: str, cfg: BenchConfig, rate: float = 0.0) -> dict[str, Any]:
    """Closed loop (``rate`` 0: each caller calls again as soon as answered) or open loop."""
    pool = _requests(cfg)
    latencies: list[float] = []
    stages: Counter[str] = Counter()
    explored = 0
    errors = 0
    total = 0
    async with grpc.aio.insecure_channel(addr) as channel:
        call = channel.unary_unary(
            "/streamrec.v1.Recommender/Recommend",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.RecommendResponse.FromString,
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + cfg.warmup_s
        stop_at = measure_from + cfg.duration_s
        interval = cfg.concurrency / rate if rate > 0 else 0.0

        async def worker(caller: int) -> None:
            nonlocal errors, total, explored
            i = caller * 37
            due = start + interval * caller / cfg.concurrency  # open loop: staggered schedule
            while (now := loop.time()) < stop_at:
                if interval:
                    if due > now:
                        await asyncio.sleep(due - now)
                    sent_at, due = due, due + interval  # late sends are charged their delay
                else:
                    sent_at = now
                i = (i + 1) % len(pool)
                try:
                    reply = await call(pool[i], timeout=5.0)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                total += 1
                if sent_at >= measure_from:
                    latencies.append(loop.time() - sent_at)
                    stages[pb.FallbackStage.Name(reply.fallback_stage)] += 1
                    explored += sum(EXPLORING_REASON in item.reasons for item in reply.items)

        await asyncio.gather(*(worker(w) for w in range(cfg.concurrency)))
    values = np.array(latencies) * 1000.0 if latencies else np.array([0.0])
    return {
        "requests": len(latencies),
        "total_requests": total,
        "errors": errors,
        "rps": len(latencies) / cfg.duration_s,
        "p50_ms": float(np.percentile(values, 50)),
        "p95_ms": float(np.percentile(values, 95)),
        "p99_ms": float(np.percentile(values, 99)),
        "stages": dict(sorted(stages.items())),
        "explored": explored,
    }


def _client_process(addr: str, cfg: BenchConfig, rate: float, conn: Connection) -> None:
    try:
        conn.send(asyncio.run(_drive(addr, cfg, rate)))
    except Exception as exc:  # noqa: BLE001 — reported to the parent, which raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


async def drive_in_child(addr: str, cfg: BenchConfig, rate: float = 0.0) -> dict[str, Any]:
    """Run the load generator in a spawned process; return its summary."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client_process, args=(addr, cfg, rate, child), daemon=True)
    proc.start()
    child.close()
    try:
        limit = cfg.warmup_s + cfg.duration_s + 60.0
        ready = await asyncio.to_thread(parent.poll, limit)
        if not ready:
            raise UnavailableError(f"bench client did not finish within {limit:.0f}s")
        result: dict[str, Any] = parent.recv()
    finally:
        await asyncio.to_thread(proc.join, 10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if "error" in result:
        raise UnavailableError(f"bench client failed: {result['error']}")
    return result


class _CacheCounts:
    """Hits, misses and resets (emptied: a lost connection) of the server's tracked caches
    between :meth:`mark` and :meth:`since`."""

    def __init__(self, reader: StateReader) -> None:
        self.reader = reader
        self._mark: dict[str, int] = {}

    def _now(self) -> dict[str, int]:
        now: dict[str, int] = {}
        rows, users = self.reader.neighbour_cache, self.reader.user_caches
        for cache, source in (("rows", rows), ("users", users)):
            if source is not None:
                now.update({f"{cache}_{result}": n for result, n in source.counts().items()})
        if rows is not None:
            now["rows_resets"] = rows.resets
        if users is not None:
            now["users_resets"] = users.recent.resets
        return now

    def mark(self) -> None:
        self._mark = self._now()

    def since(self) -> Counter[str]:
        return Counter({name: n - self._mark.get(name, 0) for name, n in self._now().items()})


def hit_rates(totals: Counter[str]) -> dict[str, float | None]:
    """Share of lookups answered in process, per cache (None: cache off)."""
    out: dict[str, float | None] = {}
    for cache in ("rows", "users"):
        hits, misses = totals[f"{cache}_hit"], totals[f"{cache}_miss"]
        out[cache] = round(hits / (hits + misses), 4) if hits + misses else None
    return out


# --- echo baseline ------------------------------------------------------------------------------
class _Echo(pb_grpc.RecommenderServicer):
    def __init__(self, response: pb.RecommendResponse) -> None:
        self.response = response

    async def Recommend(self, request: Any, context: Any) -> pb.RecommendResponse:
        return self.response

    async def SimilarItems(self, request: Any, context: Any) -> pb.RecommendResponse:
        return self.response


async def _echo_server(response: pb.RecommendResponse) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_RecommenderServicer_to_server(_Echo(response), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


# --- the run ----------------------------------------------------------------------------------
async def run_bench(base: Settings, cfg: BenchConfig) -> dict[str, Any]:
    """Populate, measure echo and real server, clean up; return the report."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    keys = Keyspace(prefix)
    redis = aioredis.Redis.from_url(base.redis_url, socket_timeout=30.0)
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    settings = base.model_copy(
        update={
            "key_prefix": prefix,
            "topic_prefix": prefix,
            "grpc_addr": "127.0.0.1:0",
            "server_metrics_port": 0,
            "last_known_file": workdir / "last_known.json",
        }
    )
    try:
        try:
            await asyncio.wait_for(redis.ping(), base.network_timeout_s)
        except (OSError, TimeoutError, aioredis.RedisError) as exc:
            raise UnavailableError(f"Redis at {base.redis_url} does not answer: {exc}") from exc
        started = time.monotonic()
        await populate(redis, keys, cfg, time.time())
        populate_s = time.monotonic() - started
        if cfg.with_exposures:
            await kafka_admin.create_topics(settings)
        try:
            report = await _measure(settings, cfg)
        finally:
            if cfg.with_exposures:
                await kafka_admin.delete_topics(settings)
        report.update(
            items=cfg.items,
            users=cfg.users,
            concurrency=cfg.concurrency,
            duration_s=cfg.duration_s,
            k=cfg.k,
            exposures=cfg.with_exposures,
            exploration=cfg.exploration,
            exploration_share=settings.exploration_share,
            pool_items=min(cfg.pool_items, cfg.items),
            populate_s=round(populate_s, 2),
            key_prefix=prefix,
        )
        return report
    finally:
        try:
            await delete_prefix(redis, keys)
        finally:
            await redis.aclose()


async def _side(addr: str, cfg: BenchConfig, reader: StateReader | None = None) -> dict[str, Any]:
    """One closed-loop run against ``addr``, with this process's CPU time (the server's) and,
    given the real server's ``reader``, its Redis round trips and cache counts."""
    caches = _CacheCounts(reader) if reader is not None else None
    trips_before = reader.round_trips if reader is not None else 0
    if caches is not None:
        caches.mark()
    cpu_before = time.process_time()
    run = await drive_in_child(addr, cfg)
    run["cpu_s"] = time.process_time() - cpu_before
    run["trips"] = reader.round_trips - trips_before if reader is not None else 0
    run["cache"] = caches.since() if caches is not None else Counter()
    return run


def _cpu_ms(run: dict[str, Any]) -> float:
    return 1000.0 * float(run["cpu_s"]) / max(1, int(run["total_requests"]))


def _summary(runs: list[dict[str, Any]], echo_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one server over its rounds, each round against that round's echo."""
    ratios = [
        r["rps"] / e["rps"] if e["rps"] else 0.0 for r, e in zip(runs, echo_runs, strict=True)
    ]
    middle = median_round(ratios)
    real, echo = runs[middle], echo_runs[middle]
    total = sum(r["total_requests"] for r in runs)
    cache_totals: Counter[str] = sum((r["cache"] for r in runs), Counter())
    return {
        "rounds": len(ratios),
        "ratio_runs": spread(ratios, 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "rps_runs": spread([r["rps"] for r in runs], 1),
        "p50_ms_runs": spread([r["p50_ms"] for r in runs], 3),
        "p99_ms_runs": spread([r["p99_ms"] for r in runs], 3),
        "cpu_ms_per_request_runs": spread([_cpu_ms(r) for r in runs], 3),
        "echo_rps_runs": spread([e["rps"] for e in echo_runs], 1),
        "rps": round(real["rps"], 1),
        "p50_ms": round(real["p50_ms"], 3),
        "p95_ms": round(real["p95_ms"], 3),
        "p99_ms": round(real["p99_ms"], 3),
        "errors": sum(r["errors"] for r in runs),
        "stages": real["stages"],
        "explored_items_per_answer": round(
            sum(r.get("explored", 0) for r in runs) / max(1, sum(r["requests"] for r in runs)),
            4,
        ),
        "echo_rps": round(echo["rps"], 1),
        "echo_p50_ms": round(echo["p50_ms"], 3),
        "echo_p95_ms": round(echo["p95_ms"], 3),
        "echo_p99_ms": round(echo["p99_ms"], 3),
        "ratio": round(ratios[middle], 3),
        "redis_round_trips_per_request": round(sum(r["trips"] for r in runs) / max(1, total), 3),
        "cache_hit_rates": hit_rates(cache_totals),
        "cache_resets": {name: cache_totals[f"{name}_resets"] for name in ("rows", "users")},
        "cpu_ms_per_request": round(1000.0 * sum(r["cpu_s"] for r in runs) / max(1, total), 3),
        "echo_cpu_ms_per_request": round(
            1000.0
            * sum(e["cpu_s"] for e in echo_runs)
            / max(1, sum(e["total_requests"] for e in echo_runs)),
            3,
        ),
    }


#: the figures of a run that ``redis_py_vs_wire`` compares
_PAIRED: dict[str, Callable[[dict[str, Any]], float]] = {
    "rps": lambda run: float(run["rps"]),
    "p50_ms": lambda run: float(run["p50_ms"]),
    "p99_ms": lambda run: float(run["p99_ms"]),
    "cpu_ms_per_request": _cpu_ms,
}


def _paired(of: list[dict[str, Any]], to: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-round ratios of ``of``'s figures to ``to``'s (same round), min / median / max."""
    out: dict[str, dict[str, float]] = {}
    for name, figure in _PAIRED.items():
        pairs = zip(of, to, strict=True)
        out[name] = spread([figure(a) / figure(b) if figure(b) else 0.0 for a, b in pairs], 3)
    return out


async def _use_client(reader: StateReader, kind: RequestClientKind, settings: Settings) -> None:
    """Switch the running server's request path to ``kind`` (caches emptied), connected."""
    requests = reader.use_client(kind, settings)
    deadline = asyncio.get_running_loop().time() + settings.network_timeout_s
    try:
        await requests.open(deadline)
    except (OSError, TimeoutError, aioredis.RedisError) as exc:
        raise UnavailableError(f"the {kind} client did not connect: {exc}") from exc


def _set_exploration(shared: SharedState, on: ExplorationConfig, mode: ExplorationMode) -> None:
    """Serve with exploration ``on`` (the settings' shares) or ``off`` (share 0: the request
    path returns before drawing, the refresher stops reading the pool)."""
    shared.exploration = (
        on if mode == "on" else dataclasses.replace(on, share=0.0, share_by_surface={})
    )


async def _measure(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    server = Server(settings, log_exposures=cfg.with_exposures)
    await server.start()
    settle_heap()  # as ``run_server`` does; undone below (this may be a test process)
    clients = cfg.clients
    modes = cfg.exploration_modes
    try:
        if server.recommender is None:
            raise UnavailableError("server did not start its recommender")
        reader = server.recommender.reader
        shared = server.recommender.shared
        explore_on = shared.exploration
        _set_exploration(shared, explore_on, modes[0])
        await _use_client(reader, clients[0], settings)
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            sample = await stub.Recommend(
                pb.RecommendRequest(user_id="u0", k=cfg.k, context=pb.Context(tenant="t0"))
            )
        echo, echo_addr = await _echo_server(sample)
        echo_runs: list[dict[str, Any]] = []
        sides = [(kind, mode) for kind in clients for mode in modes]
        runs: dict[tuple[RequestClientKind, ExplorationMode], list[dict[str, Any]]] = {
            side: [] for side in sides
        }
        try:
            for round_no in range(max(1, cfg.rounds)):  # side by side: noise hits all alike
                echo_runs.append(await _side(echo_addr, cfg))
                for kind, mode in sides if round_no % 2 == 0 else sides[::-1]:
                    _set_exploration(shared, explore_on, mode)
                    await _use_client(reader, kind, settings)  # every side starts cold
                    runs[(kind, mode)].append(await _side(server.address, cfg, reader))
            echo_open = None
            if cfg.rate > 0:
                _set_exploration(shared, explore_on, modes[0])
                await _use_client(reader, clients[0], settings)  # the open loop's client
                echo_open = await drive_in_child(echo_addr, cfg, cfg.rate)
        finally:
            await echo.stop(1.0)
        real_open = await drive_in_child(server.address, cfg, cfg.rate) if cfg.rate > 0 else None
    finally:
        gc.unfreeze()
        await server.stop(2.0)
    open_loop: dict[str, Any] | None = None
    if real_open is not None and echo_open is not None:
        open_loop = {
            "offered_rps": cfg.rate,
            "rps": round(real_open["rps"], 1),
            "p50_ms": round(real_open["p50_ms"], 3),
            "p95_ms": round(real_open["p95_ms"], 3),
            "p99_ms": round(real_open["p99_ms"], 3),
            "errors": real_open["errors"],
            "echo_rps": round(echo_open["rps"], 1),
            "echo_p50_ms": round(echo_open["p50_ms"], 3),
            "echo_p99_ms": round(echo_open["p99_ms"], 3),
        }
    first = modes[0]
    report = _summary(runs[(clients[0], first)], echo_runs)
    report.update(
        redis_client=cfg.redis_client,
        response_bytes=sample.ByteSize(),
        open_loop=open_loop,
    )
    if len(clients) > 1:
        report["clients"] = {kind: _summary(runs[(kind, first)], echo_runs) for kind in clients}
        report["redis_py_vs_wire"] = _paired(runs[("redis-py", first)], runs[("wire", first)])
    if len(modes) > 1:
        on, off = runs[(clients[0], "on")], runs[(clients[0], "off")]
        report["exploration_modes"] = {
            mode: _summary(runs[(clients[0], mode)], echo_runs) for mode in modes
        }
        report["exploration_on_vs_off"] = _paired(on, off)
        report["serve_cpu_ratio"] = report["exploration_on_vs_off"]["cpu_ms_per_request"]
    return report
