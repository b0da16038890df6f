"""`streamrec bench ingest --json` runs end to end on the real broker and Redis."""

from __future__ import annotations

import json

from tests.support import RunCli


def test_bench_ingest_json(run_cli: RunCli, kafka_bootstrap: str, redis_url: str) -> None:
    result = run_cli(
        "bench",
        "ingest",
        "--events",
        "2000",
        "--items",
        "500",
        "--users",
        "200",
        "--rounds",
        "1",
        "--json",
        env={"STREAMREC_KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMREC_REDIS_URL": redis_url},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    for key in (
        "events_per_s",
        "bare_events_per_s",
        "ratio",
        "redis_roundtrips_per_event",
        "bytes_per_item",
        "bytes_per_user",
        "memory_growth",
    ):
        assert isinstance(report[key], float), key
    assert report["events"] == 2000
    # the median round's figures, measured side by side, reported together
    assert report["ratio"] == report["events_per_s"] / report["bare_events_per_s"]
    assert report["ratio_per_round"] == [report["ratio"]]
    assert report["ratio_runs"]["median"] == report["ratio"]
    assert report["events_per_s"] > 0 and report["bare_events_per_s"] > 0
    # one read and one apply per batch of up to 500 (the stream is on the topic before the
    # consumers start, so batches fill up): far below the 0.05 per event target
    assert 0 < report["redis_roundtrips_per_event"] <= 0.05
    assert report["bytes_per_item"] > 0 and report["bytes_per_user"] > 0
    # CPU accounting over the measured window: both runs cost this process CPU; only the full
    # processor makes Redis work (one Lua apply per batch), the bare agent never calls it
    cpu = report["cpu_per_event"]
    for run in ("full", "bare"):
        assert cpu[run]["worker_us"] > 0 and cpu[run]["worker_utilisation"] > 0, run
    assert cpu["full"]["redis_us"] > cpu["bare"]["redis_us"] >= 0
    # the baseline apply script ran in the same round on the same stream (issue 22)
    assert cpu["baseline"]["redis_us"] > 0 and cpu["baseline"]["worker_us"] > 0
    redis_us = report["redis_us_per_event"]
    assert redis_us["current_per_round"] == [cpu["full"]["redis_us"]]
    assert redis_us["baseline_per_round"] == [cpu["baseline"]["redis_us"]]
    assert redis_us["reduction_per_round"] == [
        cpu["baseline"]["redis_us"] / cpu["full"]["redis_us"]
    ]
