"""streamrec_serving_items_total: items of Recommend answers by slot kind (exploration share)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from schemas.events import EXPLORING_REASON
from serving import metrics
from serving.servicer import RecommenderServicer


def _count(surface: str, slot: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "streamrec_serving_items_total", {"surface": surface, "slot": slot}
    )
    return value or 0.0


def _answer(*reasons: tuple[str, ...]) -> Any:
    return SimpleNamespace(items=[SimpleNamespace(reasons=r) for r in reasons])


def test_explored_and_ranked_items_are_counted_per_surface() -> None:
    before = {slot: _count("pdp", slot) for slot in ("explored", "ranked")}
    other = _count("home", "explored")
    RecommenderServicer._count_items(
        _answer(("co-viewed with a",), ("popular",), (EXPLORING_REASON,)), "pdp"
    )
    RecommenderServicer._count_items(_answer(("popular",), ("popular",)), "pdp")
    assert _count("pdp", "explored") - before["explored"] == 1
    assert _count("pdp", "ranked") - before["ranked"] == 4
    assert _count("home", "explored") == other
