"""The dashboard's CTR counters end to end: exposures and clicks through the real worker's join
(real Kafka and Redis), read by a real ``streamrec monitor`` and scraped from its /metrics."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from core.settings import Settings
from schemas.metrics import CTR_CLICKS, CTR_IMPRESSIONS
from schemas.topics import Topic
from tests.support import EVENTUALLY_S, REPO, STREAMREC
from tests.worker_support import (
    outcome,
    produce,
    start_worker,
    stop_worker,
    wait_applied,
    worker_env,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exposure(request_id: str, user: str, surface: str, variant: str, items: list[str]) -> bytes:
    return orjson.dumps(
        {
            "request_id": request_id,
            "user_id": user,
            "ts": time.time(),
            "items": [{"item_id": item, "rank": n + 1} for n, item in enumerate(items)],
            "context": {"surface": surface},
            "variant": variant,
        }
    )


def start_monitor(settings: Settings, log: Path, port: int) -> subprocess.Popen[bytes]:
    """``streamrec monitor`` on the test's topics and keys, /metrics on ``port``."""
    return subprocess.Popen(
        [str(STREAMREC), "monitor", "--loglevel", "warning"],
        env=worker_env(settings, None, monitor_metrics_port=str(port), monitor_interval_s="0.5"),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


def scrape(port: int) -> dict[tuple[str, str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (s.name, s.labels["surface"], s.labels["variant"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name
        in {CTR_IMPRESSIONS.name.removesuffix("_total"), CTR_CLICKS.name.removesuffix("_total")}
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_monitor_exports_the_join_counters_with_bounded_labels(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    now = time.time()
    exposures = [
        (b"u1", exposure("r1", "u1", "home", "treatment", ["X", "Y"])),
        (b"u2", exposure("r2", "u2", "home", "treatment", ["X", "Z"])),
        # not one of slo_surfaces (home, pdp, cart): counted under surface "other"
        (b"u3", exposure("r3", "u3", "widget", "control", ["A", "B", "C"])),
    ]
    clicks = [
        (b"u1", outcome("u1", "Y", now + 1, "click", request_id="r1")),
        (b"u3", outcome("u3", "C", now + 1, "click", request_id="r3")),
        (b"u2", outcome("u2", "Q", now + 1, "click", request_id="r2")),  # Q was not shown
    ]
    port = free_port()
    worker = start_worker(settings, tmp_path / "worker.log")
    monitor = start_monitor(settings, tmp_path / "monitor.log", port)
    try:
        await produce(settings, Topic.EXPOSURES, exposures)
        await wait_applied(settings, redis, [Topic.EXPOSURES], procs=[worker])
        await produce(settings, Topic.OUTCOMES, clicks)
        await wait_applied(settings, redis, [Topic.OUTCOMES], procs=[worker])
        expected = {
            (CTR_IMPRESSIONS.name, "home", "treatment"): 4.0,
            (CTR_CLICKS.name, "home", "treatment"): 1.0,
            (CTR_IMPRESSIONS.name, "other", "control"): 3.0,
            (CTR_CLICKS.name, "other", "control"): 1.0,
        }
        deadline = time.monotonic() + EVENTUALLY_S
        got: dict[tuple[str, str, str], float] = {}
        while time.monotonic() < deadline:
            assert monitor.poll() is None, (tmp_path / "monitor.log").read_text()
            try:
                got = await asyncio.to_thread(scrape, port)
            except OSError:
                got = {}  # /metrics not up yet
            if got == expected:
                break
            await asyncio.sleep(0.3)
        assert got == expected
    finally:
        stop_worker(monitor)
        stop_worker(worker)
