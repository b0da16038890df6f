"""`streamrec demo`: bring the loop up, drive the synthetic shop through it, show it, clean up.

Order of work: lease the local stack (start what is down; stop on exit only what this run
started), create topics under a fresh ``demo-<time>`` prefix, start one worker and one server
as subprocesses (own session, same environment), publish the catalog, then run the shop's
sessions at a steady rate while a live view shows events/s, lag, freshness, latency and three
users' recommendations. At the end (duration over, Ctrl-C or SIGTERM): stop the load, let the
worker drain briefly, stop the server and the worker (SIGTERM, SIGKILL after a grace), delete
the demo's topics and Redis keys, print the summary. Everything started is stopped in
``finally`` blocks, also on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import grpc
from aiokafka.errors import KafkaError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.live import Live

from core.errors import StreamrecError, UnavailableError
from core.settings import Settings
from messaging import kafka_admin
from messaging.producer import EventProducer
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.demo.load import WATCHED, Load
from streamrec.demo.probe import Probe, delete_keys, read_alerts
from streamrec.demo.shop import Shop, ShopConfig
from streamrec.demo.summary import Summary
from streamrec.demo.view import render
from streamrec.stack.children import Child, child_env
from streamrec.stack.children import start_child as start_process
from streamrec.stack.local import LocalStack

__all__ = ["DemoOptions", "Summary", "run_demo"]

STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float = 60.0
    rate: float = 200.0
    seed: int = 7
    live: bool | None = None  # None: a live table on a terminal, progress lines otherwise


# --- settings and processes ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    with socket.socket() as sock:
        try:
            sock.bind((host.strip("[]") or "127.0.0.1", int(port)))
        except OSError:
            return False
    return True


def demo_settings(base: Settings, env: Mapping[str, str], tmp: Path) -> Settings:
    """The run's settings: a fresh prefix, a free gRPC port unless one was set, metrics off."""
    tag = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    update: dict[str, object] = {
        "topic_prefix": tag,
        "key_prefix": tag,
        "consumer_group": f"{tag}-worker",
        "last_known_file": tmp / "last_known.json",
    }
    if "STREAMREC_GRPC_ADDR" not in env and not _port_free(base.grpc_addr):
        update["grpc_addr"] = f"127.0.0.1:{_free_port()}"
    if "STREAMREC_WORKER_METRICS_PORT" not in env:
        update["worker_metrics_port"] = 0
    if "STREAMREC_SERVER_METRICS_PORT" not in env:
        update["server_metrics_port"] = 0
    return base.model_copy(update=update)


def start_child(name: str, argv: list[str], settings: Settings, log: Path) -> Child:
    return start_process(name, argv, child_env(settings), log, owner="demo")


def stop_child(child: Child, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; only ever the process this run started."""
    child.stop(grace_s)


# --- orchestration ---------------------------------------------------------------------------


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """During blocking phases, SIGTERM raises KeyboardInterrupt so ``finally`` blocks run."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(base: Settings, options: DemoOptions, echo: Callable[[str], None] = print) -> Summary:
    """Run the whole demo; return its summary (already printed). Leaves nothing running."""
    tmp = Path(tempfile.mkdtemp(prefix="streamrec-demo-"))
    settings = demo_settings(base, os.environ, tmp)
    summary = Summary(prefix=settings.topic_prefix, rate=options.rate)
    stack = LocalStack(settings, timeout_s=READY_TIMEOUT_S, echo=lambda m: echo(f"stack: {m}"))
    try:
        with _terminate_as_interrupt():
            echo(f"demo: kafka {settings.kafka_bootstrap}, redis {stack.redis.address}")
            try:
                with stack.lease() as states:
                    for state in states:
                        echo(f"stack: {state.line().strip()}")
                    asyncio.run(_main(settings, options, summary, echo))
            except KeyboardInterrupt:
                summary.interrupted = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = {state.name: state for state in stack.status()}
    left = [f"{n} ({s.address})" for n, s in after.items() if s.running]
    echo(f"stack: {'left running: ' + ', '.join(left) if left else 'stopped'}")
    for line in summary.lines():
        echo(line)
    return summary


async def _main(
    settings: Settings, options: DemoOptions, summary: Summary, echo: Callable[[str], None]
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            echo(f"demo: {signal.Signals(signum).name} - stopping")
        summary.interrupted = True
        stop.set()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        loop.add_signal_handler(sig, on_signal, sig)
    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.network_timeout_s,
        socket_connect_timeout=settings.network_timeout_s,
    )
    children: list[Child] = []
    try:
        created = await kafka_admin.create_topics(settings)
        echo(f"demo: created {len(created)} topics under prefix {settings.topic_prefix}")
        logs = settings.home / "logs"
        tag = settings.topic_prefix
        children.append(
            start_child(
                "server", ["serve", "--log-level", "WARNING"], settings, logs / f"{tag}-server.log"
            )
        )
        children.append(
            start_child(
                "worker", ["worker", "--loglevel", "warning"], settings, logs / f"{tag}-worker.log"
            )
        )
        for child in children:
            echo(f"demo: started {child.name} pid {child.proc.pid} (log {child.log})")
        await _run_load(settings, options, summary, children, redis, stop, echo)
    finally:
        try:
            for child in reversed(children):
                await asyncio.to_thread(stop_child, child)
                echo(
                    f"demo: stopped {child.name} pid {child.proc.pid} "
                    f"(exit {child.proc.returncode})"
                )
            await _cleanup(settings, redis, echo)
        finally:
            for sig, handler in previous.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)


async def _cleanup(settings: Settings, redis: Redis, echo: Callable[[str], None]) -> None:
    try:
        deleted = await kafka_admin.delete_topics(settings)
        echo(f"demo: deleted {len(deleted)} topics")
    except StreamrecError as exc:
        echo(f"demo: could not delete topics: {exc}")
    try:
        keys = await delete_keys(redis, settings.key_prefix, settings.network_timeout_s)
        echo(f"demo: deleted {keys} Redis keys of prefix {settings.key_prefix}")
    except (RedisError, OSError, TimeoutError) as exc:
        echo(f"demo: could not delete Redis keys: {exc}")
    finally:
        await redis.aclose()


async def _wait_ready(
    settings: Settings,
    children: list[Child],
    redis: Redis,
    channel: grpc.aio.Channel,
    items: int,
    stop: asyncio.Event,
) -> None:
    """Until the server answers health checks and the worker has applied the catalog."""
    health = health_pb2_grpc.HealthStub(channel)
    keys = Keyspace(settings.key_prefix)
    deadline = time.monotonic() + READY_TIMEOUT_S
    server_ok = worker_ok = False
    while not (server_ok and worker_ok) and not stop.is_set():
        for child in children:
            child.check_alive()
        if not server_ok:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                server_ok = reply.status == health_pb2.HealthCheckResponse.SERVING
        if not worker_ok:
            count = await asyncio.wait_for(
                redis.hlen(keys.item_categories), settings.network_timeout_s
            )
            worker_ok = int(count) >= items
        if time.monotonic() > deadline:
            waiting = [n for n, ok in (("server", server_ok), ("worker", worker_ok)) if not ok]
            raise UnavailableError(f"demo: {', '.join(waiting)} not ready in {READY_TIMEOUT_S:g}s")
        await asyncio.sleep(0.2)


async def _warm_up(
    shop: Shop,
    producer: EventProducer,
    stub: pb_grpc.RecommenderAsyncStub,
    children: list[Child],
    stop: asyncio.Event,
) -> None:
    """Some organic browsing first, until the server has popularity to answer from.

    Before any outcome is applied the server knows no item and answers UNAVAILABLE; the
    load starts once an answer comes back non-empty (its hit counts start there too).
    """
    users = list(shop.users)[WATCHED : WATCHED + 30]
    for user in users:
        shop.start_session(user)
        for outcome in shop.act(user, [], None).outcomes:
            await producer.send_event(Topic.OUTCOMES, outcome)
    await producer.flush()
    request = pb.RecommendRequest(user_id="demo-warm-up", k=shop.config.k)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not stop.is_set():
        for child in children:
            child.check_alive()
        with contextlib.suppress(grpc.aio.AioRpcError):
            if (await stub.Recommend(request, timeout=2.0)).items:
                return
        if time.monotonic() > deadline:
            raise UnavailableError(f"demo: server had no answer after {READY_TIMEOUT_S:g}s")
        await asyncio.sleep(0.2)


async def _run_load(
    settings: Settings,
    options: DemoOptions,
    summary: Summary,
    children: list[Child],
    redis: Redis,
    stop: asyncio.Event,
    echo: Callable[[str], None],
) -> None:
    users = max(300, int(options.rate * 3))
    shop = Shop(ShopConfig(seed=options.seed, users=users))
    probe = Probe(settings, redis)
    channel = grpc.aio.insecure_channel(settings.grpc_addr)
    try:
        async with EventProducer(settings) as producer:
            for item in shop.item_events():
                await producer.send_event(Topic.ITEMS, item)
            await producer.flush()
            echo(
                f"demo: published {len(shop.items)} items in {len(shop.categories)} categories;"
                " waiting for the worker and the server"
            )
            started = time.monotonic()
            await _wait_ready(settings, children, redis, channel, len(shop.items), stop)
            await _warm_up(shop, producer, pb_grpc.RecommenderStub(channel), children, stop)
            if stop.is_set():
                return
            took = time.monotonic() - started
            echo(
                f"demo: ready in {took:.1f}s; {len(shop.users)} users, "
                f"{options.rate:g} events/s for {options.duration_s:g}s (Ctrl-C stops)"
            )
            await probe.start()
            load = Load(
                shop,
                pb_grpc.RecommenderStub(channel),
                producer,
                summary,
                options.rate,
                timeout_s=max(2.0, settings.request_timeout_s * 8),
            )
            summary.started = time.monotonic()
            await _drive(load, probe, summary, children, options, stop)
        await _drain(probe, summary, children)
        summary.alerts = await read_alerts(settings)
    finally:
        await probe.stop()
        await channel.close(None)


async def _drive(
    load: Load,
    probe: Probe,
    summary: Summary,
    children: list[Child],
    options: DemoOptions,
    stop: asyncio.Event,
) -> None:
    console = Console()
    live_on = console.is_terminal if options.live is None else options.live
    load_stop = asyncio.Event()
    load_task = asyncio.create_task(load.run(load_stop))
    end = summary.started + options.duration_s
    last = (time.monotonic(), 0, 0)
    last_print = time.monotonic()
    live = (
        Live(
            render(summary, load, options.duration_s),
            console=console,
            refresh_per_second=4,
            transient=False,
        )
        if live_on
        else None
    )
    try:
        if live is not None:
            live.start()
        while not stop.is_set() and time.monotonic() < end and not load_task.done():
            await asyncio.sleep(0.5)
            for child in children:
                child.check_alive()
            # a missed sample is fine: the next one is half a second away
            with contextlib.suppress(RedisError, KafkaError, OSError, TimeoutError):
                await probe.sample(summary)
            now = time.monotonic()
            summary.elapsed_s = now - summary.started
            t0, p0, q0 = last
            if now - t0 >= 2.0:
                summary.produced_rate = (summary.produced - p0) / (now - t0)
                summary.processed_rate = (summary.processed - q0) / (now - t0)
                last = (now, summary.produced, summary.processed)
            if live is not None:
                live.update(render(summary, load, end - now))
            elif now - last_print >= 5.0:
                last_print = now
                print(
                    f"demo: t={summary.elapsed_s:4.0f}s  events/s {summary.produced_rate:.0f}"
                    f" produced {summary.processed_rate:.0f} processed  lag {summary.lag}"
                    f"  freshness {summary.freshness_s[-1] if summary.freshness_s else 0:.2f}s"
                    f"  HR@10 {summary.hits.hr_streamrec:.3f} vs pop "
                    f"{summary.hits.hr_popularity:.3f}",
                    flush=True,
                )
    finally:
        load_stop.set()
        await load_task
        summary.elapsed_s = time.monotonic() - summary.started
        if live is not None:
            live.update(render(summary, load, 0.0))
            live.stop()


async def _drain(probe: Probe, summary: Summary, children: list[Child]) -> None:
    """Give the worker a moment to apply what was produced, for the final counts."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if any(child.proc.poll() is not None for child in children):
            return
        with contextlib.suppress(RedisError, KafkaError, OSError, TimeoutError):
            await probe.sample(summary)
            if summary.lag == 0:
                return
        await asyncio.sleep(0.3)
