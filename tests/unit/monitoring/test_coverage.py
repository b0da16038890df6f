"""Coverage and long-tail share: hand-computed readings, buckets, metrics and status lines."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry

from monitoring.coverage import (
    CoverageInputs,
    CoverageMetrics,
    coverage_lines,
    coverage_of,
    head_items,
    window_buckets,
)
from monitoring.levels import Level

# catalog of 10 items, I9 unavailable → 9 available; popularity I0 > X (not in catalog) > I9
# (unavailable) > I1 > I2 > ...; head = ceil(0.2 * 9) = 2 available items: I0, I1
CATALOG = frozenset(f"I{i}" for i in range(10))
POP = ("I0", "X", "I9", "I1", "I2", "I3")
SHOWN = {"I0": 50.0, "I1": 20.0, "I2": 10.0, "I5": 5.0, "I9": 10.0, "X": 5.0}


def _inputs(shown: dict[str, float] = SHOWN) -> CoverageInputs:
    return CoverageInputs(
        shown=shown, catalog=CATALOG, unavailable=frozenset({"I9"}), popularity=POP
    )


def test_head_is_the_most_popular_available_items() -> None:
    available = CATALOG - {"I9"}
    assert head_items(POP, available, 0.2) == {"I0", "I1"}
    assert head_items(POP, available, 0.5) == {"I0", "I1", "I2", "I3"}  # ceil(4.5)=5, 4 known
    assert head_items((), available, 0.2) == set()


def test_reading_by_hand() -> None:
    r = coverage_of(_inputs(), head_share=0.2, window_s=3600)
    # available shown: I0 I1 I2 I5 = 4 of 9 (I9 unavailable, X not in the catalog)
    assert r.coverage == pytest.approx(4 / 9)
    assert (r.available_items, r.shown_available, r.head_items) == (9, 4, 2)
    # impressions 100; head I0 + I1 = 70; tail = 30 (I2 10, I5 5, I9 10, X 5)
    assert r.impressions == 100
    assert r.long_tail_share == pytest.approx(0.30)


def test_undefined_without_catalog_or_impressions() -> None:
    r = coverage_of(
        CoverageInputs(shown=SHOWN, catalog=frozenset(), unavailable=frozenset(), popularity=POP),
        head_share=0.2,
        window_s=3600,
    )
    assert r.coverage is None and r.long_tail_share is None
    r = coverage_of(_inputs({}), head_share=0.2, window_s=3600)
    assert r.coverage == 0.0 and r.long_tail_share is None and r.impressions == 0


def test_window_buckets_cover_the_window() -> None:
    # now = 3,650: the window (50, 3650] touches buckets 0 (0-300) … 12 (3600-3900)
    assert window_buckets(3650.0, window_s=3600, bucket_s=300) == list(range(13))
    assert window_buckets(3600.0, window_s=3600, bucket_s=300) == list(range(13))
    assert window_buckets(3599.0, window_s=3600, bucket_s=300) == [-1, *range(12)]


def test_metrics_are_set_and_nan_when_undefined() -> None:
    registry = CollectorRegistry()
    metrics = CoverageMetrics(registry)
    metrics.publish(coverage_of(_inputs(), head_share=0.2, window_s=3600))
    assert registry.get_sample_value("streamrec_catalog_coverage_ratio") == pytest.approx(4 / 9)
    assert registry.get_sample_value("streamrec_long_tail_impression_share") == pytest.approx(0.3)
    metrics.publish(coverage_of(_inputs({}), head_share=0.2, window_s=3600))
    value = registry.get_sample_value("streamrec_long_tail_impression_share")
    assert value is not None and math.isnan(value)


def test_status_lines_from_the_monitor_heartbeat() -> None:
    doc = coverage_of(_inputs(), head_share=0.2, window_s=3600).to_doc()
    assert coverage_lines([{"role": "monitor"}]) == []
    cov, tail = coverage_lines([{"role": "monitor", "coverage": doc}])
    assert (cov.subject, cov.metric, cov.level) == ("catalog", "coverage", Level.OK)
    assert cov.value == pytest.approx(4 / 9)
    assert cov.detail == "4 of 9 available items shown, last 3600 s"
    assert tail.metric == "long_tail_share" and tail.value == pytest.approx(0.3)
    assert "of 100 impressions, outside the 2 most popular" in tail.detail
