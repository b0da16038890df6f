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
import heapq
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec import kafka_admin
from streamrec.children import Child
from streamrec.children import start_child as start_process
from streamrec.demo_shop import Hits, Shop, ShopConfig, UserView
from streamrec.errors import StreamrecError, UnavailableError
from streamrec.producer import EventProducer, RateLimiter
from streamrec.settings import Settings
from streamrec.stack import LocalStack

__all__ = ["DemoOptions", "Summary", "run_demo"]

STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 10.0
THINK_S = (0.4, 1.2)  # pause between two steps of one session (the worker applies meanwhile)
WATCHED = 3
_FLOW_TOPICS = (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float = 60.0
    rate: float = 200.0
    seed: int = 7
    live: bool | None = None  # None: a live table on a terminal, progress lines otherwise


def _percentile(values: list[float] | deque[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(slots=True)
class Summary:
    """The figures of one run (also the live view's data)."""

    prefix: str
    rate: float
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float = 0.0
    produced: int = 0
    requests: int = 0
    request_errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    fallback_answers: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    freshness_s: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    processed: int = 0
    lag: int | None = None
    last_write_age_s: float | None = None
    hits: Hits = field(default_factory=Hits)
    alerts: list[str] = field(default_factory=list)
    interrupted: bool = False
    produced_rate: float = 0.0
    processed_rate: float = 0.0

    def lines(self) -> list[str]:
        lat50, lat99 = _percentile(self.latencies_ms, 50), _percentile(self.latencies_ms, 99)
        fr50, fr99 = _percentile(self.freshness_s, 50), _percentile(self.freshness_s, 99)
        secs = max(self.elapsed_s, 1e-9)
        fallback = self.fallback_answers / self.requests if self.requests else 0.0
        codes = "".join(f", {code} {n}" for code, n in sorted(self.error_codes.items()))
        kinds = ", ".join(sorted(set(self.alerts))) if self.alerts else "none"
        state = " (interrupted)" if self.interrupted else ""
        return [
            f"demo summary{state}: {self.elapsed_s:.1f} s of load, prefix {self.prefix}",
            f"  outcomes produced     {self.produced:>8}   "
            f"({self.produced / secs:.1f}/s, target {self.rate:g}/s)",
            f"  recommend requests    {self.requests:>8}   "
            f"(errors {self.request_errors}{codes}, popularity fallback {fallback:.1%})",
            f"  events processed      {self.processed:>8}   "
            "(items + outcomes + exposures applied by the worker)",
            f"  final lag             {self.lag if self.lag is not None else '?':>8}   events",
            f"  latency p99           {lat99:8.1f} ms (p50 {lat50:.1f} ms, client round trip)",
            f"  freshness p99         {fr99:8.2f} s  (p50 {fr50:.2f} s, age of newest applied "
            "event)",
            f"  HR@10 streamrec         {self.hits.hr_streamrec:8.3f}   "
            f"({self.hits.streamrec}/{self.hits.targets} targets in the server's top 10)",
            f"  HR@10 popularity        {self.hits.hr_popularity:8.3f}   "
            f"({self.hits.popularity}/{self.hits.targets}, demo's running popularity counts)",
            f"  alerts                {len(self.alerts):>8}   ({kinds})",
        ]


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


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STREAMREC_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        STREAMREC_REDIS_URL=settings.redis_url,
        STREAMREC_TOPIC_PREFIX=settings.topic_prefix,
        STREAMREC_KEY_PREFIX=settings.key_prefix,
        STREAMREC_CONSUMER_GROUP=settings.consumer_group,
        STREAMREC_GRPC_ADDR=settings.grpc_addr,
        STREAMREC_WORKER_METRICS_PORT=str(settings.worker_metrics_port),
        STREAMREC_SERVER_METRICS_PORT=str(settings.server_metrics_port),
        STREAMREC_LAST_KNOWN_FILE=str(settings.last_known_file),
        STREAMREC_HOME=str(settings.home),
    )
    return env


def start_child(name: str, argv: list[str], settings: Settings, log: Path) -> Child:
    return start_process(name, argv, child_env(settings), log, owner="demo")


def stop_child(child: Child, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; only ever the process this run started."""
    child.stop(grace_s)


# --- probes ------------------------------------------------------------------------------------


class Probe:
    """Lag (end offsets − applied offsets), processed counts and freshness, every ``tick``."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._settings = settings
        self._redis = redis
        self._keys = Keyspace(settings.key_prefix)
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._names = {settings.topic(t.value): t.value for t in _FLOW_TOPICS}

    async def start(self) -> None:
        infos = await kafka_admin.describe_topics(self._settings)
        self._partitions = [
            TopicPartition(info.name, p)
            for info in infos
            if info.name in self._names
            for p in range(info.partitions)
        ]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            enable_auto_commit=False,
            request_timeout_ms=int(self._settings.network_timeout_s * 1000),
        )
        await asyncio.wait_for(consumer.start(), self._settings.network_timeout_s)
        self._consumer = consumer

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(consumer.stop(), self._settings.network_timeout_s)

    async def applied(self) -> dict[tuple[str, int], int]:
        """Next offset to apply per (logical topic, partition), from the worker's Redis offsets."""
        raw = await asyncio.wait_for(
            self._redis.hgetall(self._keys.offsets), self._settings.network_timeout_s
        )
        out: dict[tuple[str, int], int] = {}
        for key, value in raw.items():
            text = key.decode() if isinstance(key, bytes) else str(key)
            topic, _, partition = text.rpartition("|")
            out[(topic, int(partition))] = int(value) + 1
        return out

    async def sample(self, summary: Summary) -> None:
        timeout = self._settings.network_timeout_s
        applied = await self.applied()
        summary.processed = sum(applied.values())
        meta = await asyncio.wait_for(self._redis.hgetall(self._keys.meta), timeout)
        now = time.time()
        newest, last_write = meta.get(b"newest_event"), meta.get(b"last_write")
        if newest is not None and summary.produced:
            summary.freshness_s.append(max(0.0, now - float(newest)))
        if last_write is not None:
            summary.last_write_age_s = max(0.0, now - float(last_write))
        if self._consumer is not None and self._partitions:
            ends = await asyncio.wait_for(self._consumer.end_offsets(self._partitions), timeout)
            summary.lag = sum(
                max(0, int(end) - applied.get((self._names[tp.topic], tp.partition), 0))
                for tp, end in ends.items()
            )


async def read_alerts(settings: Settings) -> list[str]:
    """Kinds of the ``firing`` alert events on the run's alerts topic."""
    consumer = AIOKafkaConsumer(
        settings.topic(Topic.ALERTS.value),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    timeout = settings.network_timeout_s
    kinds: list[str] = []
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        tps = list(consumer.assignment()) or [TopicPartition(settings.topic("alerts"), 0)]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        remaining = sum(int(v) for v in ends.values())
        deadline = time.monotonic() + timeout
        while remaining > 0 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    remaining -= 1
                    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                        event = orjson.loads(record.value or b"{}")
                        if event.get("state") == "firing":
                            kinds.append(f"{event.get('kind')}/{event.get('severity')}")
    finally:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            await asyncio.wait_for(consumer.stop(), timeout)
    return kinds


async def delete_keys(redis: Redis, prefix: str, timeout_s: float) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=Keyspace(prefix).pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await asyncio.wait_for(redis.unlink(*batch), timeout_s))
            batch = []
    if batch:
        deleted += int(await asyncio.wait_for(redis.unlink(*batch), timeout_s))
    return deleted


# --- the load ------------------------------------------------------------------------------


class Load:
    """Sessions of the shop's users at a steady event rate, through the real server."""

    def __init__(
        self,
        shop: Shop,
        stub: pb_grpc.RecommenderAsyncStub,
        producer: EventProducer,
        summary: Summary,
        rate: float,
        timeout_s: float,
    ) -> None:
        self.shop = shop
        self.stub = stub
        self.producer = producer
        self.summary = summary
        self.limiter = RateLimiter(rate, burst=max(1, int(rate * 0.1)))
        self.timeout_s = timeout_s
        self._rng = random.Random(shop.config.seed + 1)
        users = list(shop.users)
        self.watched = users[:WATCHED]
        self._idle = users[WATCHED:]
        self._rng.shuffle(self._idle)
        self._due: list[tuple[float, int, str]] = []
        self._seq = 0
        self.views: dict[str, UserView] = {u: shop.view(u) for u in self.watched}
        # sessions in flight for `rate` events/s with THINK_S pauses (the limiter caps the rate)
        think = sum(THINK_S) / 2
        self.concurrency = max(4, min(len(users) - WATCHED, int(rate * think) + 1))
        self._wake = asyncio.Event()

    def _schedule(self, user: str, delay: float) -> None:
        self._seq += 1
        heapq.heappush(self._due, (time.monotonic() + delay, self._seq, user))
        self._wake.set()

    def _new_session(self, delay: float) -> None:
        user = self._idle.pop(0)
        self.shop.start_session(user)
        self._schedule(user, delay)

    async def run(self, stop: asyncio.Event) -> None:
        for user in self.watched:
            self.shop.start_session(user)
            self._schedule(user, self._rng.uniform(0, 0.5))
        for _ in range(self.concurrency):
            self._new_session(self._rng.uniform(0, sum(THINK_S)))
        drivers = min(64, self.concurrency)
        tasks = [asyncio.create_task(self._driver(stop)) for _ in range(drivers)]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    async def _next_user(self, stop: asyncio.Event) -> str | None:
        while not stop.is_set():
            if self._due and self._due[0][0] <= time.monotonic():
                return heapq.heappop(self._due)[2]
            self._wake.clear()
            wait = self._due[0][0] - time.monotonic() if self._due else 0.2
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, min(wait, 0.2)))
        return None

    async def _driver(self, stop: asyncio.Event) -> None:
        while (user := await self._next_user(stop)) is not None:
            await self._step(user)

    async def _step(self, user: str) -> None:
        shop, summary = self.shop, self.summary
        context = pb.Context(
            tenant=shop.context.tenant, surface=shop.context.surface, locale=shop.context.locale
        )
        request = pb.RecommendRequest(user_id=user, k=shop.config.k, context=context)
        answer: list[str] = []
        request_id: str | None = None
        started = time.monotonic()
        try:
            response = await self.stub.Recommend(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            summary.request_errors += 1
            summary.error_codes[exc.code().name] = summary.error_codes.get(exc.code().name, 0) + 1
        else:
            summary.latencies_ms.append((time.monotonic() - started) * 1000)
            answer = [item.item_id for item in response.items]
            request_id = response.request_id or None
            if response.fallback_stage != pb.FALLBACK_STAGE_NONE:
                summary.fallback_answers += 1
        summary.requests += 1
        step = shop.act(user, answer, request_id)
        if answer:
            summary.hits.add(step)
        await self.limiter.acquire(len(step.outcomes))
        for outcome in step.outcomes:
            await self.producer.send_event(Topic.OUTCOMES, outcome)
        summary.produced += len(step.outcomes)
        if user in self.views:
            self.views[user] = shop.view(user, answer[:5])
        think = self._rng.uniform(*THINK_S)
        if not step.session_over:
            self._schedule(user, think)
        elif user in self.views:  # watched users come straight back: the view keeps changing
            shop.start_session(user)
            self._schedule(user, think)
        else:
            self._idle.append(user)
            self._new_session(think)


# --- the live view ----------------------------------------------------------------------------


def render(summary: Summary, load: Load | None, remaining_s: float) -> Group:
    figures = Table(title=f"streamrec demo - {summary.prefix}", show_header=False, expand=False)
    figures.add_column("what", style="bold")
    figures.add_column("value", justify="right")
    lat99 = _percentile(summary.latencies_ms, 99)
    fresh = summary.freshness_s[-1] if summary.freshness_s else float("nan")
    figures.add_row(
        "events/s produced / processed",
        f"{summary.produced_rate:.0f} / {summary.processed_rate:.0f}",
    )
    figures.add_row(
        "lag (events not yet applied)", str(summary.lag if summary.lag is not None else "?")
    )
    figures.add_row("freshness (newest applied event age)", f"{fresh:.2f} s")
    figures.add_row("recommend latency p99", f"{lat99:.1f} ms")
    hits = summary.hits
    figures.add_row(
        "HR@10 streamrec / popularity", f"{hits.hr_streamrec:.3f} / {hits.hr_popularity:.3f}"
    )
    figures.add_row("requests / outcomes", f"{summary.requests} / {summary.produced}")
    figures.add_row("time left", f"{max(0.0, remaining_s):.0f} s")
    users = Table(title="three shoppers (favourite category in brackets)", expand=False)
    users.add_column("user")
    users.add_column("last viewed (newest first)")
    users.add_column("top 5 of their latest answer")
    if load is not None:
        shop = load.shop
        for view in load.views.values():
            fav = view.favourite
            recent = [f"{i}*" if shop.category_of.get(i) == fav else i for i in view.recent[:4]]
            answer = [f"{i}*" if shop.category_of.get(i) == fav else i for i in view.answer]
            users.add_row(
                f"{view.user_id} ({fav})", " ".join(recent) or "-", " ".join(answer) or "-"
            )
    note = "  * = item of the shopper's favourite category"
    return Group(figures, users, note)


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
