"""``streamrec status`` says why: a hung Redis names its reason, a replayed historical log is
reported as historical data rather than as an unexplained CRIT.

Real broker and Redis (the session's test stack); the hung Redis is a loopback listener that
completes TCP handshakes and never answers a byte.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from schemas.topics import Topic
from tests.support import hung_listener
from tests.worker_support import outcome, produce, start_worker, stop_worker, wait_applied
from tests.worker_support import run_status as status

#: 2020-01-01T00:00:00Z: far behind the wall clock
HISTORICAL_TS = 1_577_836_800.0


@pytest.fixture
def hung_redis_url() -> Iterator[str]:
    with hung_listener() as port:
        yield f"redis://127.0.0.1:{port}/0"


async def test_status_on_a_hung_redis_says_why(settings: Settings, hung_redis_url: str) -> None:
    # Kafka is the real broker: only Redis hangs
    result = status(settings, "--sample", "0", redis_url=hung_redis_url, network_timeout_s="1")
    assert result.returncode == 2, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r"streamrec: error: Redis did not answer"
        r"( within 1 s \(TimeoutError\)|: \S.*[Tt]imeout.*)",
        lines[0],
    ), lines[0]


async def test_a_replayed_historical_log_is_reported_as_historical(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    events = [
        (f"u{i % 7}".encode(), outcome(f"u{i % 7}", f"i{i % 11}", HISTORICAL_TS + i))
        for i in range(200)
    ]
    await produce(settings, Topic.OUTCOMES, events)
    worker = start_worker(settings, tmp_path / "worker.log", monitor_interval_s="0.5")
    try:
        await wait_applied(settings, redis, procs=[worker])
        # the worker publishes its newest event time each monitor interval and commits the
        # offsets a moment after applying them: wait for both
        deadline = time.monotonic() + 60
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            result = status(settings, "--json", "--sample", "0")
            doc = json.loads(result.stdout)
            if doc["topics"]["outcomes"]["historical"]:
                break
            await asyncio.sleep(0.5)
        outcomes = doc["topics"]["outcomes"]
        assert outcomes["historical"] is True, doc
        assert outcomes["lag"] == 0
        assert outcomes["newest_event_at"] == "2020-01-01T00:03:19+00:00"
        line = next(
            x
            for x in doc["lines"]
            if x["subject"] == "outcomes" and x["metric"] == "newest_event_age_s"
        )
        assert line["level"] == "CRIT"
        assert line["detail"].startswith("newest event 2020-01-01T00:03:19+00:00 vs wall clock ")
        assert line["detail"].endswith(
            "consumer lag 0: historical data? freshness is measured against the wall clock"
        )
        text = status(settings, "--sample", "0")
        assert "historical data?" in text.stdout, text.stdout
    finally:
        stop_worker(worker)
