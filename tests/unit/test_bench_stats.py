"""The min / median / max summary both benchmarks report."""

from __future__ import annotations

import pytest

from streamrec.bench_stats import spread


def test_spread_of_repeated_measurements() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([0.4871, 0.5254]) == {"min": 0.4871, "median": 0.50625, "max": 0.5254}
    assert spread([0.4871, 0.5254, 0.4983], 3) == {"min": 0.487, "median": 0.498, "max": 0.525}


def test_spread_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        spread([])
