"""``bench serve --exploration``: the seeded pool, the on/off switch, the report's lines."""

from __future__ import annotations

from typing import Any

import fakeredis
import numpy as np
import pytest

from schemas.keyspace import Keyspace
from serving.exploration import ExplorationConfig
from streamrec.bench.serve import (
    SEEDED_CTR,
    SURFACES,
    BenchConfig,
    _set_exploration,
    seed_new_items,
)
from streamrec.commands.bench_serve import _exploration
from tests.support import run_cli, stderr_lines


async def test_seeded_pool_is_the_newest_items_with_counts() -> None:
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    keys = Keyspace("b")
    cfg = BenchConfig(items=1000, pool_items=50)
    await seed_new_items(redis, keys, cfg, 10_000.0, np.random.default_rng(1))
    pool: Any = await redis.zrevrange(keys.new_items, 0, -1, withscores=True)
    assert [m.decode() for m, _ in pool] == [f"i{999 - j}" for j in range(50)]
    assert [s for _, s in pool] == [10_000.0 - 60.0 * j for j in range(50)]
    imp_raw: Any = await redis.zrange(keys.item_impressions, 0, -1, withscores=True)
    imp = dict(imp_raw)
    clk_raw: Any = await redis.zrange(keys.item_clicks, 0, -1, withscores=True)
    clk = dict(clk_raw)
    assert imp and all(0 < n <= 30 for n in imp.values())
    assert all(clk[m] <= imp[m] for m in clk)
    counters = await redis.hgetall(keys.surface_variant_ctr)
    for surface in SURFACES:
        shown = int(counters[f"{surface}|control|imp".encode()])
        assert int(counters[f"{surface}|control|clk".encode()]) == shown * SEEDED_CTR
    await redis.aclose()


def test_modes_and_the_switch() -> None:
    assert BenchConfig(exploration="both").exploration_modes == ("on", "off")
    assert BenchConfig(exploration="off").exploration_modes == ("off",)

    class Shared:
        exploration = ExplorationConfig()

    on = ExplorationConfig(share=0.2, share_by_surface={"pdp": 0.1}, prior_beta=9.0)
    shared = Shared()
    _set_exploration(shared, on, "off")  # type: ignore[arg-type]
    assert shared.exploration.share == 0.0 and dict(shared.exploration.share_by_surface) == {}
    assert shared.exploration.prior_beta == 9.0
    _set_exploration(shared, on, "on")  # type: ignore[arg-type]
    assert shared.exploration is on


def test_report_lines() -> None:
    spread = {"min": 1.0, "median": 1.1, "max": 1.2}
    figures = {
        "rps_runs": spread,
        "p50_ms_runs": spread,
        "p99_ms_runs": spread,
        "cpu_ms_per_request_runs": spread,
        "explored_items_per_answer": 1.0,
    }
    report = {
        "rounds": 3,
        "exploration_modes": {"on": figures, "off": {**figures, "explored_items_per_answer": 0}},
        "exploration_on_vs_off": {"cpu_ms_per_request": spread},
        "serve_cpu_ratio": spread,
    }
    lines = _exploration(report)
    assert lines[0] == "exploration, median (min-max) of 3 rounds:"
    assert "explored items/answer 1" in lines[1] and "explored items/answer 0" in lines[2]
    assert lines[-1] == "  serve_cpu_ratio (CPU per request on / off): 1.1 (1-1.2)"


@pytest.mark.parametrize("value", ["maybe", "ON"])
def test_bad_exploration_choice_is_one_line(value: str) -> None:
    result = run_cli("bench", "serve", "--exploration", value, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1 and "'--exploration'" in lines[0], result.stderr
