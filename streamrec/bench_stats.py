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
