"""Pure parts of the freshness benchmark: what counts as a reflected probe, config checks."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from schemas import recommender_pb2 as pb
from streamrec.bench.freshness import FreshnessConfig, reflects


def _reply(*reasons: tuple[str, ...]) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        items=[pb.ScoredItem(item_id=f"i{n}", reasons=r) for n, r in enumerate(reasons)]
    )


def test_reflects_only_a_co_visitation_reason_naming_the_anchor() -> None:
    assert reflects(_reply(("trending in shop/home",), ("co-viewed with anchor3",)), "anchor3")
    assert not reflects(_reply(("co-viewed with anchor31",)), "anchor3")
    assert not reflects(_reply(("popular",), ("trending in shop/home",)), "anchor3")
    assert not reflects(_reply(), "anchor3")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rate", 0.0, "rate must be positive"),
        ("probes", 0, "probes must be at least 1"),
        ("duration_s", -1.0, "duration must be positive"),
        ("poll_interval_s", 0.0, "poll interval"),
        ("poll_interval_s", 2.0, "poll interval"),
    ],
)
def test_bad_config_is_a_config_error(field: str, value: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FreshnessConfig(**{field: value}).check()  # type: ignore[arg-type]
    FreshnessConfig().check()
