"""``streamrec bench freshness`` end to end at a low rate: every probe reflected, cleaned up.

The figures (latencies, achieved rate, backlog) are the bench's to report, not the test's to
bound: the test machines are shared and loaded. A probe is given a generous 60 s to show.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from core.settings import Settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from tests.support import RunCli


async def test_bench_freshness_reflects_every_probe_and_cleans_up(
    run_cli: RunCli, settings: Settings, redis: Redis
) -> None:
    result = run_cli(
        "bench",
        "freshness",
        "--rate",
        "200",
        "--probes",
        "5",
        "--timeout",
        "60",
        "--json",
        timeout=600.0,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    for key in ("p50_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "rate", "missed"):
        assert key in report, key
    assert report["probes"] == report["reflected"] == 5 and report["missed"] == 0
    assert 0 < report["min_ms"] <= report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["p99_ms"] <= report["max_ms"]
    assert report["target_rate"] == 200
    assert report["rate"] > 0 and report["background_events"] > 0  # the load ran
    assert report["backlog_end"] >= 0

    # the throwaway topics and keys are gone
    prefix = report["prefix"]
    bench = settings.model_copy(update={"topic_prefix": prefix})
    assert await kafka_admin.describe_topics(bench) == []
    assert [k async for k in redis.scan_iter(match=Keyspace(prefix).pattern)] == []
