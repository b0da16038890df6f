"""``streamrec bench serve`` logic at toy size: both sides measured, keys cleaned up."""

from __future__ import annotations

from redis.asyncio import Redis

from serving.bench import BenchConfig, run_bench
from streamrec.settings import Settings


async def test_bench_reports_server_and_echo_and_cleans_up(
    settings: Settings, redis: Redis
) -> None:
    cfg = BenchConfig(items=300, users=40, concurrency=4, duration_s=1.0, warmup_s=0.3, k=5)
    report = await run_bench(settings, cfg)
    assert report["rps"] > 0 and report["echo_rps"] > 0
    assert report["ratio"] == round(report["rps"] / report["echo_rps"], 3)
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["echo_p50_ms"] <= report["echo_p99_ms"]
    assert report["errors"] == 0
    assert report["redis_round_trips_per_request"] == 2.0  # every user has history
    assert report["cpu_ms_per_request"] > 0 and report["echo_cpu_ms_per_request"] > 0
    assert set(report["stages"]) <= {"FALLBACK_STAGE_NONE", "FALLBACK_STAGE_SEGMENT_POPULARITY"}
    assert report["response_bytes"] > 0
    assert (report["items"], report["users"], report["k"]) == (300, 40, 5)
    assert report["key_prefix"].startswith("bench-")
    pattern = f"{report['key_prefix']}:*"
    assert [key async for key in redis.scan_iter(match=pattern, count=1000)] == []
