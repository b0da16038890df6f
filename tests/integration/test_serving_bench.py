"""``streamrec bench serve`` logic at toy size: both sides measured, keys cleaned up."""

from __future__ import annotations

from dataclasses import replace

from redis.asyncio import Redis

from core.settings import Settings
from streamrec.bench.serve import BenchConfig, run_bench

#: toy size: every side measured, in seconds
TOY = BenchConfig(items=300, users=40, concurrency=4, duration_s=1.0, warmup_s=0.3, k=5, rounds=3)


async def test_bench_reports_server_and_echo_and_cleans_up(
    settings: Settings, redis: Redis
) -> None:
    report = await run_bench(settings, TOY)
    assert report["rps"] > 0 and report["echo_rps"] > 0
    assert report["rounds"] == 3 and len(report["ratio_per_round"]) == 3
    spread = report["ratio_runs"]
    assert spread["min"] <= spread["median"] <= spread["max"]
    assert report["ratio"] == spread["median"]  # the median round's figures are reported
    assert report["ratio"] == round(report["rps"] / report["echo_rps"], 3)
    assert report["rps_runs"]["min"] <= report["rps"] <= report["rps_runs"]["max"]
    assert 0 < report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    assert report["echo_p50_ms"] <= report["echo_p99_ms"]
    assert report["errors"] == 0
    # rows and users' items come from the in-process caches once read: 40 users, no writes
    assert 0 <= report["redis_round_trips_per_request"] <= 2  # at most two per request
    hit_rates = report["cache_hit_rates"]
    assert 0 < hit_rates["rows"] <= 1 and 0 < hit_rates["users"] <= 1
    assert report["cpu_ms_per_request"] > 0 and report["echo_cpu_ms_per_request"] > 0
    assert set(report["stages"]) <= {"FALLBACK_STAGE_NONE", "FALLBACK_STAGE_SEGMENT_POPULARITY"}
    assert report["response_bytes"] > 0
    assert (report["items"], report["users"], report["k"]) == (300, 40, 5)
    assert report["key_prefix"].startswith("bench-")
    assert report["open_loop"] is None
    pattern = f"{report['key_prefix']}:*"
    assert [key async for key in redis.scan_iter(match=pattern, count=1000)] == []


async def test_open_loop_phase_reports_both_sides(settings: Settings) -> None:
    report = await run_bench(settings, replace(TOY, duration_s=2.0, rate=100.0, rounds=1))
    at = report["open_loop"]
    assert at["offered_rps"] == 100.0 and at["errors"] == 0
    assert at["rps"] > 0 and at["echo_rps"] > 0
    assert 0 < at["p50_ms"] <= at["p95_ms"] <= at["p99_ms"]
    assert at["echo_p50_ms"] <= at["echo_p99_ms"]


async def test_both_redis_clients_are_measured_in_the_same_rounds(settings: Settings) -> None:
    report = await run_bench(settings, replace(TOY, rounds=2, redis_client="both"))
    assert report["redis_client"] == "both"
    clients = report["clients"]
    assert set(clients) == {"wire", "redis-py"}
    assert clients["wire"]["rps"] == report["rps"]  # the top level is the first client's
    for figures in clients.values():
        assert figures["rounds"] == 2 and figures["errors"] == 0
        assert figures["rps"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]
        for name in ("rps_runs", "p50_ms_runs", "p99_ms_runs", "cpu_ms_per_request_runs"):
            runs = figures[name]
            assert 0 < runs["min"] <= runs["median"] <= runs["max"], name
        assert 0 <= figures["redis_round_trips_per_request"] <= 2
        # both clients track reads (Redis invalidations), so both serve from the caches
        hit_rates = figures["cache_hit_rates"]
        assert 0 < hit_rates["rows"] <= 1 and 0 < hit_rates["users"] <= 1
    ratios = report["redis_py_vs_wire"]
    assert set(ratios) == {"rps", "p50_ms", "p99_ms", "cpu_ms_per_request"}
    for name, runs in ratios.items():
        assert 0 < runs["min"] <= runs["median"] <= runs["max"], name
