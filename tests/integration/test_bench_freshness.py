"""``streamrec bench freshness`` end to end at a low rate: every probe reflected, cleaned up."""

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
        "bench", "freshness", "--rate", "200", "--probes", "5", "--json", timeout=240.0
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    for key in ("p50_ms", "p95_ms", "p99_ms", "min_ms", "max_ms", "rate", "missed"):
        assert key in report, key
    assert report["probes"] == report["reflected"] == 5 and report["missed"] == 0
    assert 0 < report["min_ms"] <= report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["p99_ms"] <= report["max_ms"] < 10_000  # the probe timeout
    assert report["rate"] > 150  # paced at 200/s, measured over a few seconds
    assert report["backlog_end"] < 200  # the worker kept up with the load

    # the throwaway topics and keys are gone
    prefix = report["prefix"]
    bench = settings.model_copy(update={"topic_prefix": prefix})
    assert await kafka_admin.describe_topics(bench) == []
    assert [k async for k in redis.scan_iter(match=Keyspace(prefix).pattern)] == []
