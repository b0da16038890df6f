"""The batch planner, pure: hand-computed co-visitation, popularity, user features, catalog."""

from __future__ import annotations

import math

import orjson
import pytest

from schemas.events import Exposure, Item, Outcome
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.pipeline import RecentCache
from streams.processor import (
    BatchPlan,
    BatchPlanner,
    ProcessorConfig,
    Record,
    choose_landmark,
    decay_factor,
    parse_recent,
)

T0 = 1_700_006_400.0  # a UTC midnight
KEYS = Keyspace("p")
NO_DECAY = ProcessorConfig(covis_half_life_s=1e15, popularity_half_life_s=1e15, self_weight=0.0)


def _out(user: str, item: str, dt: float, kind: str = "view", **extra: object) -> Record:
    event = Outcome.model_validate(
        orjson.loads(
            orjson.dumps(
                {"user_id": user, "item_id": item, "event_type": kind, "ts": T0 + dt, **extra}
            )
        )
    )
    return Record(Topic.OUTCOMES, 0, int(dt), event)


def _plan(
    records: list[Record],
    config: ProcessorConfig = NO_DECAY,
    recent: dict[str, list[tuple[float, str]]] | None = None,
) -> BatchPlan:
    return BatchPlanner(KEYS, config).plan(records, recent=recent or {}, categories={}, t0=T0)


def test_pairs_weights_and_directions() -> None:
    plan = _plan([_out("u", "A", 0), _out("u", "B", 10), _out("u", "C", 20)])
    assert plan.zincr[KEYS.covis("A")] == pytest.approx({"B": 1.0, "C": 0.8})
    assert plan.zincr[KEYS.covis("B")] == pytest.approx({"A": 0.5, "C": 1.0})
    assert plan.zincr[KEYS.covis("C")] == pytest.approx({"B": 0.5, "A": 0.4})
    assert plan.zincr[KEYS.popularity()] == pytest.approx({"A": 1.0, "B": 1.0, "C": 1.0})
    assert plan.lpush[KEYS.user_recent("u")] == [
        "1700006400.000|A",
        "1700006410.000|B",
        "1700006420.000|C",
    ]
    assert plan.offsets == {"outcomes|0": (0, 20)}


def test_session_gap_window_and_event_weights() -> None:
    config = ProcessorConfig(
        covis_half_life_s=1e15,
        popularity_half_life_s=1e15,
        session_gap_s=100,
        window=1,
        self_weight=0.0,
    )
    plan = _plan(
        [
            _out("u", "A", 0),
            _out("u", "B", 500, "purchase"),
            _out("u", "C", 510),
            _out("u", "D", 520, "dismiss"),
        ],
        config,
    )
    assert KEYS.covis("A") not in plan.zincr  # B came after the session gap
    assert plan.zincr[KEYS.covis("B")] == pytest.approx({"C": 1.0})  # window 1: only B→C
    # purchase weighs 3, dismiss 0
    assert plan.zincr[KEYS.popularity()] == pytest.approx({"A": 1.0, "B": 3.0, "C": 1.0})
    assert "D" in plan.zset[KEYS.user_seen("u")]  # a dismissed item is still seen


def test_history_from_state_is_used() -> None:
    recent = {"u": parse_recent([b"1700006390.000|X"])}
    plan = _plan([_out("u", "A", 0)], recent=recent)
    assert plan.zincr[KEYS.covis("X")] == pytest.approx({"A": 1.0})
    assert plan.histories["u"][:2] == [(T0, "A"), (T0 - 10, "X")]


def test_forward_decay_and_landmark() -> None:
    assert choose_landmark(T0 + 3600) == T0
    assert decay_factor(T0 + 86400, T0, 86400) == pytest.approx(2.0)
    config = ProcessorConfig(covis_half_life_s=10.0, popularity_half_life_s=20.0, self_weight=0.0)
    plan = _plan([_out("u", "A", 0), _out("u", "B", 10)], config)
    assert plan.zincr[KEYS.covis("A")]["B"] == pytest.approx(2.0)  # one half-life later
    assert plan.zincr[KEYS.popularity()]["B"] == pytest.approx(math.sqrt(2.0))


def test_affinity_segments_join_and_catalog() -> None:
    item = Item.model_validate(
        {"item_id": "A", "categories": ["shoes"], "available": False, "ts": T0}
    )
    exposure = Exposure.model_validate(
        {
            "request_id": "r",
            "user_id": "u",
            "ts": T0,
            "items": [{"item_id": "A", "rank": 1}],
            "context": {"surface": "pdp"},
            "variant": "b",
        }
    )
    records = [
        Record(Topic.ITEMS, 0, 0, item),
        Record(Topic.EXPOSURES, 0, 0, exposure),
        _out(
            "u",
            "A",
            1,
            "click",
            request_id="r",
            context={"tenant": "t", "surface": "pdp", "locale": "en"},
        ),
    ]
    plan = _plan(records)
    assert plan.hincr[KEYS.user_affinity("u")] == pytest.approx({"shoes": 1.0})
    assert plan.zincr[KEYS.popularity("t|pdp|en")] == pytest.approx({"A": 1.0})
    assert plan.exposures == [("r", "pdp|b", [("A", 1)])]
    assert plan.joins == [("r", "A", "click")]
    assert plan.item_categories == {"A": "shoes"} and plan.item_available == {"A": False}
    assert set(plan.offsets) == {"items|0", "exposures|0", "outcomes|0"}


def test_recent_cache_is_bounded_lru() -> None:
    cache = RecentCache(max_users=2, depth=2)
    cache.update({"a": [(1.0, "x"), (0.5, "y"), (0.1, "z")], "b": []})
    cache.get_many(["a"])
    cache.update({"c": []})
    hits, misses = cache.get_many(["a", "b", "c"])
    assert set(hits) == {"a", "c"} and misses == ["b"]
    assert hits["a"] == [(1.0, "x"), (0.5, "y")]


def test_history_keeps_the_stored_precision() -> None:
    """The cached history must equal what Redis gives back (gap checks at the boundary)."""
    plan = _plan([_out("u", "A", 0.12345)])
    stored = parse_recent(plan.lpush[KEYS.user_recent("u")])
    assert plan.histories["u"] == stored
