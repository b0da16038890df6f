"""Hold out the end of a log as a validation set, so settings are tuned without the test log.

Tuning the co-visitation knobs on the test log and then reporting the test log's figures
flatters them: the knobs were picked to fit those very events. ``streamrec eval prequential
PATH --holdout-days D`` instead cuts the last ``D`` days off the training log and replays them
as the test log; only the final run of the chosen settings touches the real test log.

Rules (pure, no I/O):

* Session logs (``--format sessions``): the session-rec framework's validation split
  (Ludewig & Jannach 2018). A session belongs to the held-out part when its *last* event is
  within ``D`` days of the log's newest event, so no session is cut in two. Held-out events on
  items the remaining training part never shows are dropped (nothing could predict them), and
  then held-out sessions left with fewer than two events (nothing to predict from).
* Other logs: a plain time split. Events within ``D`` days of the newest event are held out,
  whoever the user. Nothing is dropped: an item first seen in the held-out days is a real
  cold-start miss.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from core.errors import ConfigError
from schemas.events import Outcome

__all__ = ["DAY_S", "Holdout", "check_days", "split_holdout"]

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Holdout:
    """The two parts of a split log (each in event-time order) and where it was cut."""

    train: list[Outcome]
    test: list[Outcome]
    cutoff_ts: float
    #: held-out events dropped by the session rules (unknown item, session too short)
    dropped: int


def check_days(days: float) -> None:
    """Raise :class:`ConfigError` unless ``days`` is a positive number of days."""
    if not days > 0:
        raise ConfigError(f"--holdout-days must be positive, got {days}")


def split_holdout(events: Sequence[Outcome], days: float, *, whole_sessions: bool) -> Holdout:
    """Split ``events`` (event-time order) into training and held-out parts (module doc).

    ``whole_sessions``: the session-log rules, with ``user_id`` as the session. Raises
    :class:`ConfigError` when ``days`` is not positive or either part would be empty.
    """
    check_days(days)
    if not events:
        raise ConfigError("--holdout-days: the log has no usable event to split")
    stamps = [e.ts.timestamp() for e in events]
    cutoff = max(stamps) - days * DAY_S
    if whole_sessions:
        train, test, dropped = _split_sessions(events, stamps, cutoff)
    else:
        train = [e for e, ts in zip(events, stamps, strict=True) if ts < cutoff]
        test = [e for e, ts in zip(events, stamps, strict=True) if ts >= cutoff]
        dropped = 0
    if not train or not test:
        part = "training" if not train else "held-out"
        span = (max(stamps) - min(stamps)) / DAY_S
        raise ConfigError(
            f"--holdout-days {days:g} leaves no {part} events (the log spans {span:.2f} days)"
        )
    return Holdout(train, test, cutoff, dropped)


def _split_sessions(
    events: Sequence[Outcome], stamps: Sequence[float], cutoff: float
) -> tuple[list[Outcome], list[Outcome], int]:
    last: dict[str, float] = {}
    for event, ts in zip(events, stamps, strict=True):
        if ts > last.get(event.user_id, -float("inf")):
            last[event.user_id] = ts
    held = {session for session, ts in last.items() if ts >= cutoff}
    train = [e for e in events if e.user_id not in held]
    known = {e.item_id for e in train}
    candidates = [e for e in events if e.user_id in held and e.item_id in known]
    sizes = Counter(e.user_id for e in candidates)
    test = [e for e in candidates if sizes[e.user_id] >= 2]
    return train, test, len(events) - len(train) - len(test)
