"""End to end: a real outage pages someone. Real worker, server, monitor, Prometheus and
Alertmanager (the local monitoring stack, :mod:`streamrec.stack.monitoring`), a private Kafka
and Redis, and a webhook receiver run by the test.

1. Stop the worker while events keep arriving: ``StreamrecConsumerLagWarn`` and
   ``StreamrecEventsStaleWarn`` (topic outcomes) fire and arrive; restart it: both resolve.
2. Kill Redis while the server answers: ``StreamrecServingRedisErrors`` fires and reaches the
   webhook; Redis comes back, and the alert resolves once its ``increase(...[1m])`` window no
   longer holds an error.

Every notification must carry the rule's labels, a ``summary`` and a ``runbook_url`` naming
an existing runbook. What differs from production, and why:

* the rules are the project's rule files with only ``for:`` shortened to 5 s (a copy in the
  test's directory; every expression, threshold and window is unchanged, which the test
  checks), so the lag (10,000 events) and freshness (60 s) thresholds are crossed for real;
* scrape and evaluation every second, Alertmanager ``group_wait`` 1 s and ``group_interval``
  2 s (deploy/alertmanager: 30 s / 5 m), so notifications follow within seconds;
* the monitor samples every second (``monitor_interval_s``; default 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from core import kafka_clients
from core.settings import Settings, load_settings
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.topics import Topic
from streamrec.stack.local import LocalStack
from streamrec.stack.monitoring import PROMETHEUS_CONFIG, MonitoringStack, Tuning
from streamrec.stack.tools import missing_tools, tools_dir
from tests.integration.serving_support import free_port
from tests.support import REPO, STREAMREC
from tests.worker_support import outcome, stop_worker, worker_env

pytestmark = pytest.mark.timeout(900)

SHORT_FOR = "5s"
RUNBOOKS = REPO / "docs" / "runbooks"
#: how long an alert may take to fire or resolve once its condition holds (for 5 s, 1 s
#: evaluation, 1 s group wait, 2 s group interval, plus a loaded shared machine)
DELIVERY_S = 120.0


# --- the webhook receiver ------------------------------------------------------------------
@dataclass
class Delivery:
    """One alert of one webhook notification, with the time it arrived."""

    at: float
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass
class Webhook:
    """Alertmanager webhook receiver (http.server in a thread); keeps every alert it got."""

    url: str
    received: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, payload: dict[str, Any]) -> None:
        now = time.monotonic()
        with self.lock:
            for alert in payload["alerts"]:
                self.received.append(
                    Delivery(now, alert["status"], alert["labels"], alert["annotations"])
                )

    def matching(self, alertname: str, status: str, since: float, **labels: str) -> list[Delivery]:
        with self.lock:
            return [
                d
                for d in self.received
                if d.at >= since
                and d.status == status
                and d.labels.get("alertname") == alertname
                and all(d.labels.get(k) == v for k, v in labels.items())
            ]

    async def wait(self, alertname: str, status: str, since: float, **labels: str) -> Delivery:
        deadline = time.monotonic() + DELIVERY_S
        while True:
            found = self.matching(alertname, status, since, **labels)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                with self.lock:
                    seen = sorted(
                        {(d.labels.get("alertname", ""), d.status) for d in self.received}
                    )
                raise AssertionError(
                    f"no {status} notification of {alertname} {labels} within {DELIVERY_S:g}s "
                    f"(received: {seen})"
                )
            await asyncio.sleep(0.5)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hook.add(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    thread = threading.Thread(target=server.serve_forever, name="webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- rules with short `for:` -----------------------------------------------------------------
def shortened_rules(into: Path) -> Path:
    """Copies of the rule files prometheus.yml loads, with every ``for:`` set to SHORT_FOR."""
    into.mkdir(parents=True, exist_ok=True)
    for name in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        original = yaml.safe_load((PROMETHEUS_CONFIG.parent / name).read_text())
        copy = yaml.safe_load((PROMETHEUS_CONFIG.parent / name).read_text())
        for group in copy["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    rule["for"] = SHORT_FOR
        (into / name).write_text(yaml.safe_dump(copy, sort_keys=False))
        for before, after in zip(original["groups"], copy["groups"], strict=True):
            for a, b in zip(before["rules"], after["rules"], strict=True):
                assert {k: v for k, v in a.items() if k != "for"} == {
                    k: v for k, v in b.items() if k != "for"
                }, "only for: may differ"
    return into


# --- processes -----------------------------------------------------------------------------
@dataclass
class System:
    settings: Settings
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *argv: str) -> None:
        env = worker_env(
            self.settings,
            self.settings.consumer_group,
            worker_metrics_port=str(self.settings.worker_metrics_port),
            server_metrics_port=str(self.settings.server_metrics_port),
            monitor_metrics_port=str(self.settings.monitor_metrics_port),
            monitor_interval_s="1",
        )
        handle = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [str(STREAMREC), *argv],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.logs,
            start_new_session=True,
        )
        handle.close()

    def start_worker(self) -> None:
        self.start("worker", "worker", "--loglevel", "warning")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_worker(proc)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def tail(self, name: str) -> str:
        try:
            return " | ".join((self.logs / f"{name}.log").read_text().splitlines()[-5:])
        except OSError:
            return ""


@pytest.fixture
def system(private_settings: Settings, tmp_path: Path) -> Iterator[System]:
    home_tools = tools_dir(load_settings())  # the shared cache: the packages are fetched once
    settings = private_settings.model_copy(
        update={
            "consumer_group": f"{private_settings.topic_prefix}-workers",
            "grpc_addr": f"127.0.0.1:{free_port()}",
            "worker_metrics_port": free_port(),
            "server_metrics_port": free_port(),
            "monitor_metrics_port": free_port(),
            "prometheus_port": free_port(),
            "alertmanager_port": free_port(),
            "tools_dir": home_tools,
        }
    )
    missing = missing_tools(settings)
    if missing:
        pytest.skip(f"cannot run Prometheus / Alertmanager here: missing {', '.join(missing)}")
    logs = tmp_path / "logs"
    logs.mkdir()
    running = System(settings, logs)
    try:
        yield running
    finally:
        for name in list(running.procs):
            running.stop(name)


@pytest.fixture
def monitoring(system: System, webhook: Webhook, tmp_path: Path) -> Iterator[MonitoringStack]:
    settings = system.settings.model_copy(update={"alert_webhook_url": webhook.url})
    tuning = Tuning(
        scrape_interval="1s",
        evaluation_interval="1s",
        group_wait="1s",
        group_interval="2s",
        repeat_interval="1h",
        rules_dir=shortened_rules(tmp_path / "rules"),
    )
    stack = MonitoringStack(settings, tuning=tuning, timeout_s=120.0)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def _get(url: str) -> Any:
    return json.loads(_text(url))


async def targets_up(stack: MonitoringStack) -> set[str]:
    data = await asyncio.to_thread(_get, f"{stack.url('prometheus')}/api/v1/targets")
    return {t["labels"]["job"] for t in data["data"]["activeTargets"] if t["health"] == "up"}


async def firing(stack: MonitoringStack) -> set[tuple[str, str]]:
    """(alertname, topic) of the alerts firing in Prometheus."""
    data = await asyncio.to_thread(_get, f"{stack.url('prometheus')}/api/v1/alerts")
    return {
        (a["labels"]["alertname"], a["labels"].get("topic", ""))
        for a in data["data"]["alerts"]
        if a["state"] == "firing"
    }


async def query(stack: MonitoringStack, promql: str) -> float | None:
    """The single value of an instant PromQL query, None when it has no series."""
    url = f"{stack.url('prometheus')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    result = (await asyncio.to_thread(_get, url))["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def eventually(what: str, check: Any, within_s: float = DELIVERY_S) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {within_s:g}s: {what}")
        await asyncio.sleep(0.5)


# --- traffic -------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def traffic(settings: Settings) -> AsyncIterator[list[int]]:
    """Fresh outcomes (10 every 0.2 s) and Recommend calls for new users, in the background.

    Yields a list counting [events sent, calls answered]."""
    counts = [0, 0]
    producer = kafka_clients.producer(settings, client_id="alert-test", linger_ms=5)
    await producer.start()
    channel = grpc.aio.insecure_channel(settings.grpc_addr)
    stub = pb_grpc.RecommenderStub(channel)
    rng = random.Random(7)

    async def produce() -> None:
        topic = settings.topic(Topic.OUTCOMES.value)
        while True:
            for _ in range(10):
                user = f"u{rng.randrange(500)}"
                item = f"i{rng.randrange(100)}"
                await producer.send(topic, outcome(user, item, time.time()), key=user.encode())
                counts[0] += 1
            await asyncio.sleep(0.2)

    async def call() -> None:
        while True:
            request = pb.RecommendRequest(user_id=f"new{rng.randrange(10**9)}", k=5)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Recommend(request, timeout=10)
                counts[1] += 1
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(produce()), asyncio.create_task(call())]
    try:
        yield counts
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await channel.close(None)
        await producer.stop()


async def backlog(settings: Settings, n: int) -> None:
    """``n`` fresh outcomes on partition 0 (the lag rule takes the largest partition lag)."""
    producer = kafka_clients.producer(settings, client_id="alert-test-burst", linger_ms=20)
    await producer.start()
    try:
        topic = settings.topic(Topic.OUTCOMES.value)
        futures = []
        for i in range(n):
            value = outcome(f"b{i % 1000}", f"i{i % 100}", time.time())
            futures.append(await producer.send(topic, value, partition=0))
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def assert_paged(delivery: Delivery, runbook: str) -> None:
    """A notification someone can act on: labels, a summary and a runbook that exists."""
    assert delivery.labels.get("severity") and delivery.labels.get("service") == "streamrec"
    assert delivery.annotations.get("summary"), delivery.annotations
    url = delivery.annotations.get("runbook_url", "")
    assert url == f"{RUNBOOKS.as_uri()}/{runbook}", url
    assert (RUNBOOKS / runbook).is_file()


async def test_alerts_fire_reach_the_webhook_and_resolve(
    system: System, monitoring: MonitoringStack, webhook: Webhook, private_stack: LocalStack
) -> None:
    settings = system.settings
    system.start_worker()
    system.start("server", "serve")
    system.start("monitor", "monitor", "--loglevel", "warning")
    jobs = {"streamrec-worker", "streamrec-server", "streamrec-monitor", "prometheus"}

    async def all_up() -> bool:
        for name in ("worker", "server", "monitor"):
            assert system.alive(name), f"{name} exited: {system.tail(name)}"
        return jobs <= await targets_up(monitoring)

    await eventually("Prometheus scrapes worker, server, monitor and itself", all_up)

    async with traffic(settings) as counts:
        await eventually("the server answers", lambda: _above(counts, 1, 5))

        # --- 1. worker stopped while events arrive: lag and freshness page, then resolve ----
        async def quiet() -> bool:
            """The worker processes outcomes (the monitor sees them fresh), nothing fires."""
            alerts = await firing(monitoring)
            lagging = {
                ("StreamrecConsumerLagWarn", "outcomes"),
                ("StreamrecEventsStaleWarn", "outcomes"),
            }
            age = await query(
                monitoring,
                'streamrec_newest_event_age_seconds{job="streamrec-monitor",topic="outcomes"}',
            )
            fresh = age is not None and age < 30
            return system.alive("worker") and fresh and not (alerts & lagging)

        await eventually("outcomes processed, no lag or freshness alert", quiet)
        stopped = time.monotonic()
        system.stop("worker")
        await backlog(settings, 12_000)
        lag = await webhook.wait("StreamrecConsumerLagWarn", "firing", stopped, topic="outcomes")
        assert_paged(lag, "consumer-lag.md")
        stale = await webhook.wait("StreamrecEventsStaleWarn", "firing", stopped, topic="outcomes")
        assert_paged(stale, "freshness-stale.md")
        # 60 s without a processed event (the newest one predates the stop by a few seconds)
        assert stale.at - stopped >= 40, "freshness fired before its 60 s threshold"

        restarted = time.monotonic()
        system.start_worker()
        resolved_at = {}
        for name, runbook in (
            ("StreamrecConsumerLagWarn", "consumer-lag.md"),
            ("StreamrecEventsStaleWarn", "freshness-stale.md"),
        ):
            resolved = await webhook.wait(name, "resolved", restarted, topic="outcomes")
            assert_paged(resolved, runbook)
            resolved_at[name] = resolved.at

        # --- 2. Redis killed: the server's Redis errors page, and resolve after recovery ----
        killed = time.monotonic()
        await asyncio.to_thread(private_stack.stop_redis, graceful=False)
        fired = await webhook.wait("StreamrecServingRedisErrors", "firing", killed)
        assert_paged(fired, "redis-down.md")
        assert fired.labels.get("instance") == f"127.0.0.1:{settings.server_metrics_port}"
        await asyncio.to_thread(private_stack.start_redis)
        back = time.monotonic()

        # The rule's increase(...[1m]) holds an error for a minute: the alert must resolve
        # within that (plus delivery) of the last error the server counted. A late error
        # (a Redis call timing out on a loaded machine) is counted and moves the deadline.
        errors, last_error = await redis_errors(settings), back
        while not webhook.matching("StreamrecServingRedisErrors", "resolved", back):
            now_errors = await redis_errors(settings)
            if now_errors > errors:
                errors, last_error = now_errors, time.monotonic()
            assert time.monotonic() < last_error + 60 + DELIVERY_S, (
                f"StreamrecServingRedisErrors did not resolve within 1 min + {DELIVERY_S:g}s "
                f"of the last Redis error ({errors:g} errors counted)"
            )
            assert system.alive("server"), f"server exited: {system.tail('server')}"
            await asyncio.sleep(1.0)
        resolved = webhook.matching("StreamrecServingRedisErrors", "resolved", back)[0]
        assert_paged(resolved, "redis-down.md")
        early = [d for d in webhook.matching("StreamrecServingRedisErrors", "resolved", killed)
                 if d.at < back]  # fmt: skip
        assert not early, "resolved while Redis was still down"
        marks = {"lag fired": lag.at - stopped, "stale fired": stale.at - stopped,
                 "worker restarted": restarted - stopped,
                 "lag resolved": resolved_at["StreamrecConsumerLagWarn"] - stopped,
                 "stale resolved": resolved_at["StreamrecEventsStaleWarn"] - stopped,
                 "redis killed": killed - stopped, "redis fired": fired.at - stopped,
                 "redis back": back - stopped, "last redis error": last_error - stopped,
                 "redis resolved": resolved.at - stopped}  # fmt: skip
        print("seconds after the worker stopped:", {k: round(v, 1) for k, v in marks.items()})


async def redis_errors(settings: Settings) -> float:
    """The server's streamrec_serving_redis_errors_total, read from its /metrics."""
    url = f"http://127.0.0.1:{settings.server_metrics_port}/metrics"
    for line in (await asyncio.to_thread(_text, url)).splitlines():
        if line.startswith("streamrec_serving_redis_errors_total "):
            return float(line.split()[1])
    return 0.0


async def _above(counts: list[int], index: int, value: int) -> bool:
    return counts[index] > value
