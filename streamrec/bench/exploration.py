"""Exploration benchmark: the same seeded simulation with exploration off and on, side by side.

Each run has its own throwaway topic and key prefixes and its own worker and server
(``streamrec worker`` / ``streamrec serve`` subprocesses, as ``bench freshness``); the server of
the "off" run has ``exploration_share = 0``, the "on" run the share asked for. A run:

1. produces the :class:`~streamrec.bench.exploration_sim.World`'s organic history (views of the
   initial catalog) and waits until the worker has applied it and the server is serving;
2. asks ``answers`` Recommend calls (``concurrency`` at a time) for seeded users; before the
   answer with index n, the new items due by n are announced on the items topic;
3. each user clicks each shown item with its hidden probability (the same uniform draws per
   answer position in both runs: common random numbers) and the clicks go to the outcomes
   topic with the answer's request_id, so the worker joins them with the server's exposures;
4. logs every answer with the oracle's regret, then :func:`summarise` turns the log into the
   figures. Topics and keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import redis.asyncio as aioredis

from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from messaging import kafka_admin
from messaging.producer import EventProducer, ProducerConfig
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.events import EXPLORING_REASON, Context, EventType, Item, Outcome
from schemas.topics import Topic
from streamrec.bench.exploration_sim import (
    WITHIN_ANSWERS,
    Answer,
    SimConfig,
    World,
    oracle_regret,
    summarise,
)
from streamrec.bench.freshness import (
    STOP_GRACE_S,
    _bench_settings,
    _cpu_seconds,
    _delete_keys,
    _start,
    _wait_caught_up,
    _wait_serving,
)
from streamrec.stack.children import Child, child_env

__all__ = ["ExplorationBenchConfig", "run_exploration_bench"]

log = logging.getLogger("streamrec.bench")

CONTEXT = Context(tenant="sim-shop", surface="home", locale="en-GB")
RPC_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ExplorationBenchConfig:
    """The simulation, the exploration share of the "on" run and the request concurrency."""

    sim: SimConfig
    share: float = 0.1
    concurrency: int = 4

    def check(self) -> None:
        self.sim.check()
        if not 0.0 < self.share <= 0.5:
            raise ConfigError(f"--share must be in (0, 0.5], got {self.share}")
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"--concurrency must be in 1..64, got {self.concurrency}")


def _now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """One simulation against one worker + server."""

    def __init__(
        self,
        world: World,
        cfg: ExplorationBenchConfig,
        stub: pb_grpc.RecommenderAsyncStub,
        producer: EventProducer,
    ) -> None:
        self.world, self.cfg, self.stub, self.producer = world, cfg, stub, producer
        sim = cfg.sim
        picks = np.random.default_rng(sim.seed + 2).integers(0, len(world.users), sim.answers)
        self.user_of_step = [world.users[int(u)] for u in picks]
        self.draws = np.random.default_rng(sim.seed + 3).random((sim.answers, sim.k))
        self.pending = sorted(world.arrival.items(), key=lambda kv: kv[1])
        self.arrival_t: dict[str, float] = {}
        self.log: list[Answer] = []
        self.next_step = 0
        self.errors: dict[str, int] = {}
        self.started = 0.0

    async def _announce_due(self) -> None:
        done = len(self.log)
        while self.pending and self.pending[0][1] <= done:
            item, _ = self.pending.pop(0)
            self.arrival_t[item] = time.monotonic() - self.started
            event = Item(item_id=item, categories=[self.world.category_of[item]], ts=_now())
            await self.producer.send_event(Topic.ITEMS, event)

    async def _driver(self) -> None:
        world, sim = self.world, self.cfg.sim
        while self.next_step < sim.answers:
            step = self.next_step
            self.next_step += 1
            await self._announce_due()
            user = self.user_of_step[step]
            request = pb.RecommendRequest(
                user_id=user,
                k=sim.k,
                context=pb.Context(
                    tenant=CONTEXT.tenant, surface=CONTEXT.surface, locale=CONTEXT.locale
                ),
            )
            try:
                reply = await self.stub.Recommend(request, timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                name = exc.code().name
                self.errors[name] = self.errors.get(name, 0) + 1
                continue
            items = tuple(i.item_id for i in reply.items if i.item_id in world.index)
            explored = tuple(i.item_id for i in reply.items if EXPLORING_REASON in i.reasons)
            probs = world.prob(user, items)
            clicked = [
                it for it, p, u in zip(items, probs, self.draws[step], strict=False) if u < p
            ]
            index = len(self.log)
            available = world.prob(user, world.available(index))
            regret = oracle_regret(available, probs, sim.k)
            self.log.append(
                Answer(
                    index=index,
                    t=time.monotonic() - self.started,
                    items=items,
                    explored=explored,
                    clicks=len(clicked),
                    expected_clicks=float(probs.sum()),
                    regret=regret,
                )
            )
            for item in clicked:
                outcome = Outcome(
                    user_id=user,
                    item_id=item,
                    event_type=EventType.CLICK,
                    ts=_now(),
                    request_id=reply.request_id or None,
                    context=CONTEXT,
                )
                await self.producer.send_event(Topic.OUTCOMES, outcome)

    async def run(self) -> None:
        self.started = time.monotonic()
        drivers = [asyncio.create_task(self._driver()) for _ in range(self.cfg.concurrency)]
        try:
            await asyncio.gather(*drivers)
        finally:
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)


async def _one_run(
    base: Settings, cfg: ExplorationBenchConfig, world: World, mode: str
) -> dict[str, Any]:
    share = cfg.share if mode == "on" else 0.0
    tag = f"benchexpl{mode}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="streamrec-exploration-") as tmp:
        home = Path(tmp)
        settings = _bench_settings(base, tag, home)
        await kafka_admin.create_topics(settings)
        redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.network_timeout_s,
            socket_connect_timeout=settings.network_timeout_s,
        )
        children: list[Child] = []
        run: _Run | None = None
        cpu_from = cpu_to = None
        producer = EventProducer(
            settings, ProducerConfig(linger_ms=5, client_id="streamrec-bench-exploration")
        )
        try:
            env = child_env(settings, exploration_share=str(share))
            worker = _start("worker", ["worker", "--loglevel", "warning"], env, home / "w.log")
            children.append(worker)
            server = _start(
                "server",
                ["serve", "--addr", settings.grpc_addr, "--metrics-port", "0"],
                env,
                home / "s.log",
            )
            children.append(server)
            await producer.start()
            for user, item in world.history():
                view = Outcome(
                    user_id=user,
                    item_id=item,
                    event_type=EventType.VIEW,
                    ts=_now(),
                    context=CONTEXT,
                )
                await producer.send_event(Topic.OUTCOMES, view)
            await producer.flush()
            await _wait_caught_up(settings, redis, worker, within_s=120.0)
            await _wait_serving(settings.grpc_addr, server, within_s=60.0)
            await asyncio.sleep(2 * settings.serving_refresh_s)  # the server has read the state
            log.info("run %s: history applied, server serving; %d answers", mode, cfg.sim.answers)
            async with grpc.aio.insecure_channel(settings.grpc_addr) as channel:
                run = _Run(world, cfg, pb_grpc.RecommenderStub(channel), producer)
                cpu_from = _cpu_seconds(server.proc.pid)
                await run.run()
                cpu_to = _cpu_seconds(server.proc.pid)
            worker.check_alive()
            server.check_alive()
        finally:
            with contextlib.suppress(UnavailableError):
                await producer.stop()
            for child in children:
                await asyncio.to_thread(child.stop, STOP_GRACE_S)
            await redis.aclose()
            with contextlib.suppress(UnavailableError, ConfigError):
                await kafka_admin.delete_topics(settings)
            await _delete_keys(settings)
    if run is None or not run.log:
        raise UnavailableError(f"run {mode}: no answer (errors: {run.errors})")
    arrived = {i: n for i, n in world.arrival.items() if i in run.arrival_t}
    catalog = len(world.items) - len(world.arrival) + len(arrived)
    figures = summarise(run.log, arrived, run.arrival_t, catalog)
    figures["exploration_share"] = share
    figures["rpc_errors"] = run.errors
    figures["seconds"] = run.log[-1].t
    figures["server_cpu_ms_per_answer"] = (
        1000.0 * (cpu_to - cpu_from) / len(run.log)
        if cpu_from is not None and cpu_to is not None
        else None
    )
    figures["prefix"] = tag
    return figures


def _ratio(a: Any, b: Any) -> float | None:
    return float(a) / float(b) if a is not None and b else None


async def run_exploration_bench(base: Settings, cfg: ExplorationBenchConfig) -> dict[str, Any]:
    """Run off, then on, on the same seeded world; return the side-by-side report."""
    cfg.check()
    world = World(cfg.sim)
    off = await _one_run(base, cfg, world, "off")
    on = await _one_run(base, cfg, world, "on")
    return {
        "on": on,
        "off": off,
        "new_items_shown_within_1000": on["new_items_shown_within"],
        "new_items_shown_within_1000_off": off["new_items_shown_within"],
        "coverage": on["coverage"],
        "coverage_off": off["coverage"],
        "long_tail_share": on["long_tail_share"],
        "long_tail_share_off": off["long_tail_share"],
        "clicks_per_1000_on": on["clicks_per_1000"],
        "clicks_per_1000_off": off["clicks_per_1000"],
        "clicks_per_1000_change": (_ratio(on["clicks_per_1000"], off["clicks_per_1000"]) or 1.0)
        - 1.0,
        "regret_per_1000_on": on["regret_per_1000"],
        "regret_per_1000_off": off["regret_per_1000"],
        "new_items_never_shown_on": on["new_items_never_shown"],
        "new_items_never_shown_off": off["new_items_never_shown"],
        "serve_cpu_ratio": _ratio(on["server_cpu_ms_per_answer"], off["server_cpu_ms_per_answer"]),
        "within_answers": WITHIN_ANSWERS,
        "loadavg_1m": os.getloadavg()[0],
        "config": {**asdict(cfg.sim), "share": cfg.share, "concurrency": cfg.concurrency},
    }
