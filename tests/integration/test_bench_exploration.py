"""``streamrec bench exploration`` end to end, tiny: both runs through the real stack.

The figures are the bench's to report; the test checks the report's keys and the direction
the simulation must show: the "on" run shows new items (explored), the "off" run shows fewer
(none: a new item has no history for the ranker), and the throwaway prefixes are cleaned up.
"""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from tests.support import RunCli

pytestmark = pytest.mark.timeout(180)


async def test_bench_exploration_on_shows_new_items_off_does_not(
    run_cli: RunCli, settings: Settings, redis: Redis
) -> None:
    result = run_cli(
        "bench",
        "exploration",
        "--answers",
        "400",
        "--items",
        "60",
        "--users",
        "40",
        "--share",
        "0.2",
        "--json",
        timeout=170.0,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    for key in (
        "new_items_shown_within_1000",
        "new_items_shown_within_1000_off",
        "coverage",
        "coverage_off",
        "clicks_per_1000_on",
        "clicks_per_1000_off",
        "regret_per_1000_on",
        "regret_per_1000_off",
        "long_tail_share",
        "long_tail_share_off",
        "new_items_never_shown_on",
        "new_items_never_shown_off",
    ):
        assert key in report, key
    on, off = report["on"], report["off"]
    assert on["answers"] == off["answers"] == 400
    assert on["new_items"] == off["new_items"] == 12  # 20 % of 60, all announced
    assert on["explored_impressions"] > 0 and off["explored_impressions"] == 0
    assert on["new_items_never_shown"] < off["new_items_never_shown"]
    assert report["new_items_shown_within_1000"] > 0
    assert on["first_impression_answers_p50"] is not None
    for run in (on, off):
        assert 0 < run["coverage"] <= 1 and 0 <= run["long_tail_share"] < 1
        assert run["clicks"] >= 0 and run["clicks_per_1000"] == 1000 * run["clicks"] / 400
        assert run["regret"] >= 0  # the oracle is never beaten in expectation
        assert run["rpc_errors"] == {}
    assert report["clicks_per_1000_on"] == on["clicks_per_1000"]

    for run in (on, off):  # the throwaway topics and keys are gone
        bench = settings.model_copy(update={"topic_prefix": run["prefix"]})
        assert await kafka_admin.describe_topics(bench) == []
        assert [k async for k in redis.scan_iter(match=Keyspace(run["prefix"]).pattern)] == []
