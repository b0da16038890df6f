"""The batch planner, pure: hand-computed co-visitation, popularity, user features, catalog."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from itertools import pairwise

import orjson
import pytest

from core.settings import Settings, setting_default
from schemas.events import Exposure, Item, Outcome
from schemas.keyspace import Keyspace, parse_recent
from schemas.topics import Topic
from streams.pipeline import BatchProcessor, RecentCache
from streams.processor import (
    BatchPlan,
    BatchPlanner,
    ProcessorConfig,
    Record,
    choose_landmark,
    decay_factor,
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


def _worker_depth(config: ProcessorConfig) -> int:
    """How many recent entries per user the worker reads from Redis (and caches)."""

    async def sink(_letters: object) -> None:
        raise AssertionError("no dead letters")

    processor = BatchProcessor(
        None,  # type: ignore[arg-type]  # the store is not used here
        BatchPlanner(KEYS, config),
        sink,
        max_event_bytes=65536,
        max_future_skew_s=300,
    )
    return processor.cache.depth


def _covis_through_batches(
    records: list[Record], cuts: list[int], config: ProcessorConfig
) -> dict[tuple[str, str], float]:
    """Co-visitation of ``records`` cut into batches at ``cuts``, planned as the worker does.

    Each batch is planned from what the worker would read: every user's newest entries of the
    recent list as Redis holds it after the earlier batches (LPUSH, trimmed to recent_max).
    """
    planner = BatchPlanner(KEYS, config)
    depth = _worker_depth(config)
    stored: dict[str, list[tuple[float, str]]] = {}
    covis: dict[tuple[str, str], float] = defaultdict(float)
    bounds = [0, *cuts, len(records)]
    for start, end in pairwise(bounds):
        batch = records[start:end]
        users = {r.event.user_id for r in batch if isinstance(r.event, Outcome)}
        recent = {user: stored.get(user, [])[:depth] for user in users}
        plan = planner.plan(batch, recent=recent, categories={}, t0=T0)
        for key, increments in plan.zincr.items():
            if key.startswith(KEYS.covis("")):
                for member, inc in increments.items():
                    covis[(key, member)] += inc
        for user in users:
            pushed = parse_recent(reversed(plan.lpush[KEYS.user_recent(user)]))
            stored[user] = (pushed + stored.get(user, []))[: config.recent_max]
    return dict(covis)


def test_window_does_not_depend_on_batch_boundaries() -> None:
    """Regression: a user's later event in a batch looked deeper into the history than the
    worker reads back from Redis, so a rebalance (other batch boundaries) changed one pair.

    The oldest entry ``deep`` sits exactly at the read depth: a new event planned from the
    history read back sees ``a`` (repeated) only; one planned after an earlier event of the
    same batch must not reach one entry further and pair with ``deep``.
    """
    depth = _worker_depth(NO_DECAY)
    assert depth == NO_DECAY.history_depth  # the worker reads what the planner looks at
    items = ["deep"] + ["a"] * (depth - 1) + ["b", "c"]
    records = [_out("u", item, i) for i, item in enumerate(items)]
    one_by_one = _covis_through_batches(records, list(range(1, len(records))), NO_DECAY)
    assert ("p:cv:deep", "c") not in one_by_one
    for cuts in ([depth], [], [depth, depth + 1], [1, depth - 1]):
        got = _covis_through_batches(records, cuts, NO_DECAY)
        assert got == pytest.approx(one_by_one), cuts


def test_planned_state_is_the_same_for_any_batching() -> None:
    """Random few-item histories deeper than the read depth, random batch cuts."""
    config = ProcessorConfig(covis_half_life_s=1e15, popularity_half_life_s=1e15)
    rng = random.Random(5)
    for _ in range(40):
        records = [
            _out(f"u{rng.randrange(3)}", rng.choice("aaaaabbbcde") + str(rng.randrange(2)), i)
            for i in range(90)
        ]
        reference = _covis_through_batches(records, list(range(1, len(records))), config)
        cuts = sorted(rng.sample(range(1, len(records)), rng.randrange(0, 12)))
        assert _covis_through_batches(records, cuts, config) == pytest.approx(reference), cuts


def test_config_defaults_are_the_settings_defaults() -> None:
    """ProcessorConfig declares no value of its own: each default is its setting's."""
    config = ProcessorConfig()
    for f in dataclasses.fields(ProcessorConfig):
        assert getattr(config, f.name) == setting_default(f.metadata["setting"]), f.name
    assert config.event_weights is not ProcessorConfig().event_weights  # one dict each


def test_config_from_settings_takes_every_field() -> None:
    settings = Settings(covis_window=7, user_seen_max=64, event_weights={"view": 0.5})
    config = ProcessorConfig.from_settings(settings)
    assert (config.window, config.seen_max, config.event_weights) == (7, 64, {"view": 0.5})
    assert config.event_weights is not settings.event_weights
    for f in dataclasses.fields(ProcessorConfig):
        assert getattr(config, f.name) == getattr(settings, f.metadata["setting"]), f.name


def _applied(batches: list[dict[str, float]], keep: int, top: int) -> list[tuple[str, float]]:
    """The apply script's rule on one row: ZINCRBY a batch, then keep the top ``keep``."""
    row: dict[str, float] = {}
    for batch in batches:
        for member, inc in batch.items():
            row[member] = row.get(member, 0.0) + inc
        row = dict(sorted(row.items(), key=lambda kv: -kv[1])[:keep])
    return sorted(row.items(), key=lambda kv: -kv[1])[:top]


def test_trimming_past_k_plus_slack_serves_the_same_top_k_in_any_order() -> None:
    """K = 2. Partition P sends {a: 5}, {b: 1}, {b: 3.5}; Q sends {c: 3}, {d: 2}: true top 2
    is a 5, b 4.5. Interleaved P1 Q1 P2 Q2 P3, a trim at K (or K + 1) drops b's first 1 while
    it ranks third (fourth); kept to K + 2, b never leaves and the top 2 are exact."""
    p1, p2, p3, q1, q2 = {"a": 5.0}, {"b": 1.0}, {"b": 3.5}, {"c": 3.0}, {"d": 2.0}
    in_order, interleaved = [p1, p2, p3, q1, q2], [p1, q1, p2, q2, p3]
    exact = [("a", 5.0), ("b", 4.5)]
    for slack in (0, 1):
        assert _applied(in_order, 2 + slack, 2) == exact
        assert _applied(interleaved, 2 + slack, 2) == [("a", 5.0), ("b", 3.5)]
    for slack in (2, 3):
        assert _applied(in_order, 2 + slack, 2) == _applied(interleaved, 2 + slack, 2) == exact


def test_planner_trims_covisitation_past_k_plus_slack() -> None:
    """Co-visitation rows are kept to K + slack, popularity to N (more than is served)."""
    config = dataclasses.replace(NO_DECAY, top_k=5, top_k_slack=3, popularity_top_n=40)
    plan = _plan([_out("u", "A", 0), _out("u", "B", 10)], config)
    assert plan.ztrim[KEYS.covis("A")] == plan.ztrim[KEYS.covis("B")] == 8
    assert plan.ztrim[KEYS.popularity()] == 40
    default = ProcessorConfig()
    # 100 + 27: the stored row stays within Redis' compact listpack encoding (≤ 128 members)
    assert default.top_k < default.covis_stored <= 128
    assert setting_default("serving_popularity_top_n") < default.popularity_top_n
