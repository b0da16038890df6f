"""The min / median / max summary and the median round both benchmarks report."""

from __future__ import annotations

import pytest

from streamrec.bench.stats import median_round, spread


def test_spread_of_repeated_measurements() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}
    assert spread([0.4871, 0.5254]) == {"min": 0.4871, "median": 0.50625, "max": 0.5254}
    assert spread([0.4871, 0.5254, 0.4983], 3) == {"min": 0.487, "median": 0.498, "max": 0.525}


def test_spread_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        spread([])


def test_median_round_is_the_lower_middle_of_an_even_count() -> None:
    assert median_round([0.5]) == 0
    tied = [0.48, 0.43, 0.43]
    assert tied[median_round(tied)] == 0.43
    assert median_round([0.525, 0.487, 0.498]) == 2
    assert median_round([0.53, 0.47, 0.51, 0.49]) == 3  # 0.49, not 0.51: never the flattering one
    with pytest.raises(ValueError, match="no values"):
        median_round([])
