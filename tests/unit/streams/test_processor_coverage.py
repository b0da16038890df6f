"""The planner counts the items of exposures per time bucket (coverage metrics, issue 20)."""

from __future__ import annotations

import pytest

from schemas.events import Exposure
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.processor import BatchPlanner, ProcessorConfig, Record

T0 = 1_700_006_400.0  # a UTC midnight, a multiple of 300
KEYS = Keyspace("p")
CONFIG = ProcessorConfig(coverage_bucket_s=300, coverage_window_s=3600, ctr_items_max=500)


def _exposure(rid: str, dt: float, items: list[str]) -> Record:
    event = Exposure.model_validate(
        {
            "request_id": rid,
            "user_id": "u",
            "ts": T0 + dt,
            "items": [{"item_id": item, "rank": i + 1} for i, item in enumerate(items)],
            "context": {"surface": "home"},
        }
    )
    return Record(Topic.EXPOSURES, 0, int(dt), event)


def test_items_shown_are_counted_per_bucket_with_a_ttl_and_a_bound() -> None:
    records = [
        _exposure("r1", 0, ["A", "B"]),
        _exposure("r2", 299, ["A", "C"]),
        _exposure("r3", 300, ["A"]),
    ]
    plan = BatchPlanner(KEYS, CONFIG).plan(records, recent={}, categories={}, t0=T0)
    first, second = KEYS.shown_bucket(int(T0) // 300), KEYS.shown_bucket(int(T0) // 300 + 1)
    assert first == f"p:sh:{int(T0) // 300}"
    assert plan.zincr[first] == pytest.approx({"A": 2.0, "B": 1.0, "C": 1.0})
    assert plan.zincr[second] == pytest.approx({"A": 1.0})
    assert plan.ztrim[first] == plan.ztrim[second] == 500
    # the window plus two buckets: the oldest bucket of a window is read until it has passed
    assert plan.expire[first] == plan.expire[second] == 3600 + 600
