"""Catalog coverage and long-tail share end to end: catalog, views and exposures through the real
worker (real Kafka and Redis), computed by a real ``streamrec monitor`` (scraped from its
/metrics) and shown by ``streamrec status --json``."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from core.settings import Settings
from schemas.metrics import CATALOG_COVERAGE, LONG_TAIL_SHARE
from schemas.topics import Topic
from tests.integration.test_ctr_metrics import exposure, free_port, start_monitor
from tests.support import EVENTUALLY_S
from tests.worker_support import (
    outcome,
    produce,
    run_status,
    start_worker,
    stop_worker,
    wait_applied,
)


def _item(item: str, *, available: bool) -> bytes:
    return orjson.dumps(
        {"item_id": item, "categories": ["c"], "available": available, "ts": time.time()}
    )


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    wanted = {CATALOG_COVERAGE.name, LONG_TAIL_SHARE.name}
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in wanted
    }


async def test_monitor_exports_coverage_and_long_tail(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    now = time.time()
    # 10 items, I9 unavailable: 9 available, head = ceil(0.2 * 9) = 2 items
    items = [(f"I{i}".encode(), _item(f"I{i}", available=i != 9)) for i in range(10)]
    # popularity: I0 (3 views) > I1 (2) > I2 (1): the head is I0, I1
    views = [
        (f"v{n}".encode(), outcome(f"v{n}", item, now + n))
        for n, item in enumerate(["I0", "I0", "I0", "I1", "I1", "I2"])
    ]
    # shown: I0 x2, I1, I2, I5, I9 → 4 of 9 available (coverage 4/9); of 6 impressions,
    # 3 outside the head (I2, I5, I9): long-tail share 0.5
    exposures = [
        (b"u1", exposure("r1", "u1", "home", "control", ["I0", "I1"])),
        (b"u2", exposure("r2", "u2", "home", "control", ["I0", "I2"])),
        (b"u3", exposure("r3", "u3", "pdp", "control", ["I5", "I9"])),
    ]
    port = free_port()
    worker = start_worker(settings, tmp_path / "worker.log")
    monitor = start_monitor(settings, tmp_path / "monitor.log", port)
    try:
        await produce(settings, Topic.ITEMS, items)
        await wait_applied(settings, redis, [Topic.ITEMS], procs=[worker])
        await produce(settings, Topic.OUTCOMES, views)
        await wait_applied(settings, redis, [Topic.OUTCOMES], procs=[worker])
        await produce(settings, Topic.EXPOSURES, exposures)
        await wait_applied(settings, redis, [Topic.EXPOSURES], procs=[worker])
        deadline = time.monotonic() + EVENTUALLY_S
        got: dict[str, float] = {}
        while time.monotonic() < deadline:
            assert monitor.poll() is None, (tmp_path / "monitor.log").read_text()
            try:
                got = await asyncio.to_thread(_scrape, port)
            except OSError:
                got = {}  # /metrics not up yet
            tail = got.get(LONG_TAIL_SHARE.name, math.nan)
            if not math.isnan(tail) and tail == pytest.approx(0.5):
                break
            await asyncio.sleep(0.3)
        assert got[CATALOG_COVERAGE.name] == pytest.approx(4 / 9)
        assert got[LONG_TAIL_SHARE.name] == pytest.approx(0.5)

        status = await asyncio.to_thread(run_status, settings, "--json")
        doc = orjson.loads(status.stdout)
        assert doc["coverage"]["coverage"] == pytest.approx(4 / 9), status.stderr
        assert doc["coverage"]["long_tail_share"] == pytest.approx(0.5)
        assert (doc["coverage"]["shown_available"], doc["coverage"]["head_items"]) == (4, 2)
        metrics = {(line["subject"], line["metric"]) for line in doc["lines"]}
        assert {("catalog", "coverage"), ("catalog", "long_tail_share")} <= metrics
    finally:
        stop_worker(monitor)
        stop_worker(worker)
