"""Bootstrap intervals: coverage on known-answer logs (seeded simulations), pairing, units."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.intervals import (
    Interval,
    UnitSums,
    intervals,
    paired_difference,
    resampled_means,
    unpaired_difference,
)
from evaluation.protocol import LEVEL, RESAMPLES

LOGS = 400


def _covers(interval: Interval, value: float) -> bool:
    return interval.low <= value <= interval.high


def test_bernoulli_hits_are_covered_at_the_stated_rate() -> None:
    """400 logs of 300 predictions, each a hit with p = 0.3: the true p inside ~95 % of them."""
    rng = np.random.default_rng(20240518)
    p, n = 0.3, 300
    covered = 0
    for log in range(LOGS):
        hits = rng.random(n) < p
        (found,) = intervals(np.arange(n), hits, resamples=RESAMPLES, seed=log, level=LEVEL)
        covered += _covers(found, p)
    assert 0.92 <= covered / LOGS <= 0.98


def test_sessions_are_covered_where_predictions_one_by_one_are_not() -> None:
    """Hits correlated within sessions (each session its own hit rate, mean 0.5).

    Resampling sessions keeps the stated coverage; resampling the predictions one by one
    ignores the correlation and its intervals are too narrow (docs/evaluation.md).
    """
    rng = np.random.default_rng(7)
    by_session = by_prediction = 0
    logs = 200
    for log in range(logs):
        sizes = rng.integers(1, 7, size=200)
        rates = rng.beta(1.0, 1.0, size=200)  # mean 0.5, independent of the session's size
        sessions = np.repeat(np.arange(200), sizes)
        hits = rng.random(sessions.size) < rates[sessions]
        (grouped,) = intervals(sessions, hits, resamples=RESAMPLES, seed=log, level=LEVEL)
        (single,) = intervals(
            np.arange(sessions.size), hits, resamples=RESAMPLES, seed=log, level=LEVEL
        )
        by_session += _covers(grouped, 0.5)
        by_prediction += _covers(single, 0.5)
    assert 0.92 <= by_session / logs <= 0.98
    assert by_prediction / logs < 0.88


def test_paired_interval_is_narrower_for_positively_correlated_runs() -> None:
    """B agrees with A on most predictions and gains a little: pairing removes the shared part."""
    rng = np.random.default_rng(3)
    n = 2000
    units = np.arange(n) // 3  # sessions of three predictions
    a = (rng.random(n) < 0.6).astype(float)
    b = a.copy()
    flip = rng.random(n) < 0.05
    b[flip] = (rng.random(int(flip.sum())) < 0.8).astype(float)  # a few changes, mostly hits
    (paired,) = paired_difference(units, a, b, resamples=RESAMPLES, seed=0, level=LEVEL)
    (unpaired,) = unpaired_difference(units, a, units, b, resamples=RESAMPLES, seed=0, level=LEVEL)
    width = paired.high - paired.low
    assert width < 0.5 * (unpaired.high - unpaired.low)
    assert _covers(paired, float(b.mean() - a.mean()))
    assert paired.excludes_zero and not unpaired.excludes_zero


def test_unit_sums_and_the_ratio_estimator() -> None:
    # units u: predictions (1, 0) and v: (1): per-unit sums, counts, means
    data = UnitSums.of(["u", "v", "u"], [[1.0, 0.5], [1.0, 1.0], [0.0, 0.0]])
    assert data.units == 2
    assert data.sums.tolist() == [[1.0, 0.5], [1.0, 1.0]]
    assert data.counts.tolist() == [2.0, 1.0]
    assert data.means.tolist() == pytest.approx([2 / 3, 0.5])
    # every resample's mean is Σ sums / Σ counts of drawn units: one of a few values
    boot = resampled_means(data, 500, np.random.default_rng(1))
    assert boot.shape == (500, 2)
    possible = {1 / 2, 2 / 3, 1.0}  # u u, u v, v v
    assert {round(x, 9) for x in boot[:, 0]} <= {round(x, 9) for x in possible}


def test_seeded_and_chunked_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    units, values = rng.integers(0, 50, size=400), rng.random((400, 3))
    first = intervals(units, values, resamples=300, seed=11, level=LEVEL)
    assert first == intervals(units, values, resamples=300, seed=11, level=LEVEL)
    assert first != intervals(units, values, resamples=300, seed=12, level=LEVEL)
    monkeypatch.setattr("evaluation.intervals._CHUNK_CELLS", 50 * 7)  # chunks of 7 resamples
    chunked = intervals(units, values, resamples=300, seed=11, level=LEVEL)
    # the same draws (one random stream), summed in other BLAS blocks: equal to rounding
    assert [c.to_list() for c in chunked] == [pytest.approx(f.to_list()) for f in first]


def test_degenerate_and_bad_inputs() -> None:
    (same,) = paired_difference(
        [1, 2, 3], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0], resamples=100, seed=0, level=LEVEL
    )
    assert same == Interval(0.0, 0.0) and not same.excludes_zero
    assert Interval(0.01, 0.02).excludes_zero and Interval(-0.02, -0.01).excludes_zero
    with pytest.raises(ValueError, match="no predictions"):
        intervals([], [], resamples=10, seed=0, level=LEVEL)
    with pytest.raises(ValueError, match="one key per row"):
        intervals([1, 2], [1.0, 0.0, 1.0], resamples=10, seed=0, level=LEVEL)
    with pytest.raises(ValueError, match="same predictions"):
        paired_difference([1, 2], [1.0, 0.0], [1.0], resamples=10, seed=0, level=LEVEL)
    with pytest.raises(ValueError, match="resamples"):
        intervals([1], [1.0], resamples=0, seed=0, level=LEVEL)
    with pytest.raises(ValueError, match="level"):
        intervals([1], [1.0], resamples=10, seed=0, level=1.5)
