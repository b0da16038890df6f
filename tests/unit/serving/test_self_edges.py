"""Self edges: the planner's repeat-click edge covis(a→a), the ranker's self_neighbours."""

from __future__ import annotations

import orjson
import pytest

from schemas.events import Outcome
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from serving.config import RankerConfig
from serving.ranker import Anchor, RankInput, rank
from streams.processor import BatchPlan, BatchPlanner, ProcessorConfig, Record

T0 = 1_700_006_400.0
KEYS = Keyspace("p")
CONFIG = ProcessorConfig(
    covis_half_life_s=1e15, popularity_half_life_s=1e15, self_weight=2.0, window=3
)


def _out(user: str, item: str, dt: float) -> Record:
    raw = {"user_id": user, "item_id": item, "event_type": "click", "ts": T0 + dt}
    event = Outcome.model_validate(orjson.loads(orjson.dumps(raw)))
    return Record(Topic.OUTCOMES, 0, int(dt), event)


def _plan(items: str, config: ProcessorConfig = CONFIG, gap: float = 10.0) -> BatchPlan:
    records = [_out("u", item, i * gap) for i, item in enumerate(items)]
    return BatchPlanner(KEYS, config).plan(records, recent={}, categories={}, t0=T0)


def test_immediate_repeat_adds_a_full_self_edge() -> None:
    plan = _plan("AA")
    # distance 1: self_weight × event weight × decay^0
    assert plan.zincr[KEYS.covis("A")] == pytest.approx({"A": 2.0})


def test_repeat_after_other_items_is_decayed_by_distance() -> None:
    plan = _plan("ABA")
    cv_a = plan.zincr[KEYS.covis("A")]
    # A→B forward 1.0; then the second A: backward A→B 0.5, self edge at distance 2: 2 × 0.8
    assert cv_a == pytest.approx({"B": 1.0 + 0.5, "A": 2.0 * 0.8})


def test_repeat_outside_the_window_or_the_session_adds_nothing() -> None:
    # three distinct items in between, window 3: the old A is out of reach
    assert "A" not in _plan("ABCDA").zincr[KEYS.covis("A")]
    assert _plan("ABCA").zincr[KEYS.covis("A")]["A"] == pytest.approx(2.0 * 0.8**2)
    far = _plan("AA", gap=CONFIG.session_gap_s + 1)
    assert "A" not in far.zincr.get(KEYS.covis("A"), {})


def test_self_weight_zero_switches_self_edges_off() -> None:
    off = ProcessorConfig(covis_half_life_s=1e15, popularity_half_life_s=1e15, self_weight=0.0)
    assert "A" not in _plan("AA", off).zincr.get(KEYS.covis("A"), {})


def _rank(config: RankerConfig) -> list[str]:
    inp = RankInput(
        k=2,
        now=T0,
        anchors=[Anchor("a", 1.0)],
        neighbours={"a": [("a", 3.0), ("b", 1.0)]},
        seen=frozenset({"a"}),
    )
    return [item.item_id for item in rank(inp, config).items]


def test_ranker_uses_the_self_edge_only_when_asked() -> None:
    base = RankerConfig(popularity_exponent=0.0, max_category_share=1.0, exclude_seen=False)
    assert _rank(base) == ["b"]  # no self edge: only b is a candidate
    assert _rank(base.model_copy(update={"self_neighbours": True})) == ["a", "b"]
    # with seen items excluded the anchor stays out even when self edges are on
    hidden = base.model_copy(update={"self_neighbours": True, "exclude_seen": True})
    assert _rank(hidden) == ["b"]
