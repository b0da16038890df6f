"""``bench serve --exploration both`` at toy size on the real Redis and server: the seeded
new-item pool is explored on the ``on`` side only, and ``serve_cpu_ratio`` is reported."""

from __future__ import annotations

from redis.asyncio import Redis

from core.settings import Settings
from streamrec.bench.serve import BenchConfig, run_bench

TOY = BenchConfig(
    items=300,
    users=40,
    concurrency=4,
    duration_s=1.0,
    warmup_s=0.3,
    k=10,
    rounds=2,
    exploration="both",
    pool_items=100,
)


async def test_exploration_on_and_off_in_the_same_rounds(settings: Settings, redis: Redis) -> None:
    report = await run_bench(settings.model_copy(update={"exploration_share": 0.1}), TOY)
    assert report["exploration"] == "both" and report["pool_items"] == 100
    on, off = report["exploration_modes"]["on"], report["exploration_modes"]["off"]
    # k = 10 at share 0.1: one slot per answer, filled while allowed arms remain
    assert 0.5 <= on["explored_items_per_answer"] <= 1.0
    assert off["explored_items_per_answer"] == 0
    assert report["explored_items_per_answer"] == on["explored_items_per_answer"]  # top: on
    assert on["rounds"] == off["rounds"] == 2 and on["errors"] == off["errors"] == 0
    ratio = report["serve_cpu_ratio"]
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    assert report["exploration_on_vs_off"]["cpu_ms_per_request"] == ratio
    assert set(report["exploration_on_vs_off"]) == {"rps", "p50_ms", "p99_ms", "cpu_ms_per_request"}
    pattern = f"{report['key_prefix']}:*"
    assert [key async for key in redis.scan_iter(match=pattern, count=1000)] == []
