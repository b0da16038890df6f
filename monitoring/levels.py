"""Health levels (OK / WARN / CRIT) and the one rule that maps a value and thresholds to a level.

Shared by the drift statistics, the alert state machine and the status report, so every
monitor agrees on what "past the threshold" means (``>=`` for ``above``, ``<=`` for ``below``).
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Literal

Direction = Literal["above", "below"]


class Level(IntEnum):
    """Ordered health level; the int value is the ``streamrec status`` exit code."""

    OK = 0
    WARN = 1
    CRIT = 2

    @property
    def label(self) -> str:
        return self.name


def past(value: float, threshold: float, direction: Direction) -> bool:
    """True when ``value`` is at or beyond ``threshold`` on the bad side."""
    if math.isnan(value):
        return False
    return value >= threshold if direction == "above" else value <= threshold


def level_for(
    value: float, warn: float, crit: float | None = None, direction: Direction = "above"
) -> Level:
    """Level of ``value`` against a warn and an optional crit threshold.

    Raises :class:`ValueError` when crit is not beyond warn in the bad direction.
    """
    if crit is not None and not past(crit, warn, direction):
        side = ">=" if direction == "above" else "<="
        raise ValueError(f"crit threshold {crit} must be {side} warn threshold {warn}")
    if crit is not None and past(value, crit, direction):
        return Level.CRIT
    if past(value, warn, direction):
        return Level.WARN
    return Level.OK


def clear_point(threshold: float, clear_ratio: float, direction: Direction) -> float:
    """Value the signal must get back past to count as cleared (hysteresis).

    ``above``: ``threshold × clear_ratio``; ``below``: ``threshold / clear_ratio``.
    """
    if not 0 < clear_ratio <= 1:
        raise ValueError(f"clear_ratio must be in (0, 1], got {clear_ratio}")
    return threshold * clear_ratio if direction == "above" else threshold / clear_ratio


def is_cleared(value: float, threshold: float, clear_ratio: float, direction: Direction) -> bool:
    """True when ``value`` is strictly inside the healthy side of the hysteresis band."""
    if math.isnan(value):
        return False
    point = clear_point(threshold, clear_ratio, direction)
    return value < point if direction == "above" else value > point
