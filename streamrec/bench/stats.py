"""Summaries shared by the benchmarks (``streamrec bench …``)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], digits: int | None = None) -> dict[str, float]:
    """``min`` / ``median`` / ``max`` of repeated measurements, rounded to ``digits`` if given."""
    if not values:
        raise ValueError("spread of no values")
    summary = {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }
    if digits is None:
        return summary
    return {name: round(value, digits) for name, value in summary.items()}


def median_round(values: Sequence[float]) -> int:
    """Index of the median of per-round ``values``; of an even count, the lower middle one
    (never the flattering side). A benchmark reports that round's figures together, so its
    headline ratio is one that was measured side by side, not a ratio of two medians taken
    from different rounds."""
    if not values:
        raise ValueError("median round of no values")
    return sorted(range(len(values)), key=values.__getitem__)[(len(values) - 1) // 2]
