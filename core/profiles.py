"""Named presets of settings for kinds of event log (``STREAMREC_PROFILE``), declared once.

A profile only changes the co-visitation and ranker settings it lists; the environment and the
config file still override each of them. ``sessions`` is the defaults (tuned on short click
sessions); ``ratings`` is for users who rate or consume items over months (MovieLens-like):
a long window, no session gap, no time decay, symmetric edges. The figures behind each are in
docs/evaluation.md ("Profiles").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: "forever" for the time constants of a profile without time decay (~100 years, in seconds)
NO_DECAY_S = 3_153_600_000.0


@dataclass(frozen=True)
class Profile:
    """A named set of setting overrides and what it is for."""

    name: str
    purpose: str
    values: dict[str, Any] = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            "sessions",
            "short click sessions (e-commerce, rsc15): the defaults",
        ),
        Profile(
            "ratings",
            "long user histories without sessions (ratings, watch logs): window of 20, no "
            "session gap, no time decay, symmetric edges, no self edges, 20 anchors",
            {
                "covis_window": 20,
                "covis_session_gap_s": NO_DECAY_S,
                "covis_half_life_s": NO_DECAY_S,
                "covis_distance_decay": 0.85,
                "covis_backward_weight": 1.0,
                "covis_self_weight": 0.0,
                "ranker_max_anchors": 20,
                "ranker_anchor_decay_s": NO_DECAY_S,
                "ranker_anchor_position_decay": 0.85,
            },
        ),
    )
}
