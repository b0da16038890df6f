"""The validation split of ``eval prequential --holdout-days`` and the spec rules around it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.errors import ConfigError
from evaluation.datasets import DatasetFormat
from evaluation.holdout import DAY_S, split_holdout
from evaluation.protocol import PrequentialSpec, Protocol
from schemas.events import EventType, Outcome

T0 = 1_400_000_000.0


def _event(user: str, item: str, day: float) -> Outcome:
    return Outcome(
        user_id=user,
        item_id=item,
        event_type=EventType.CLICK,
        ts=datetime.fromtimestamp(T0 + day * DAY_S, tz=UTC),
    )


def _ids(events: list[Outcome]) -> list[tuple[str, str]]:
    return [(e.user_id, e.item_id) for e in events]


def test_sessions_are_kept_whole_by_their_last_event() -> None:
    events = [
        _event("s1", "a", 0.0),
        _event("s1", "b", 0.1),
        _event("s2", "a", 1.5),  # s2 straddles the cut (2.0): it ends after it, so held out
        _event("s3", "b", 1.9),
        _event("s3", "c", 1.95),
        _event("s2", "b", 2.1),
        _event("s4", "c", 2.5),
        _event("s4", "a", 3.0),
    ]
    split = split_holdout(events, 1.0, whole_sessions=True)
    assert split.cutoff_ts == T0 + 2.0 * DAY_S
    assert _ids(split.train) == [("s1", "a"), ("s1", "b"), ("s3", "b"), ("s3", "c")]
    assert _ids(split.test) == [("s2", "a"), ("s2", "b"), ("s4", "c"), ("s4", "a")]
    assert split.dropped == 0


def test_sessions_lose_unknown_items_then_short_sessions() -> None:
    events = [
        _event("s1", "a", 0.0),
        _event("s1", "b", 0.1),
        _event("s2", "a", 2.2),
        _event("s2", "new", 2.3),  # never in training: dropped, which leaves s2 one event long
        _event("s3", "b", 2.4),
        _event("s3", "new", 2.5),
        _event("s3", "a", 3.0),
    ]
    split = split_holdout(events, 1.0, whole_sessions=True)
    assert _ids(split.train) == [("s1", "a"), ("s1", "b")]
    assert _ids(split.test) == [("s3", "b"), ("s3", "a")]
    assert split.dropped == 3  # s2's two events and s3's "new"


def test_other_logs_are_cut_in_time_and_keep_cold_items() -> None:
    events = [
        _event("u1", "a", 0.0),
        _event("u2", "b", 1.0),
        _event("u1", "c", 2.5),
        _event("u3", "new", 2.9),
        _event("u2", "a", 3.0),
    ]
    split = split_holdout(events, 0.5, whole_sessions=False)
    assert _ids(split.train) == [("u1", "a"), ("u2", "b")]
    assert _ids(split.test) == [("u1", "c"), ("u3", "new"), ("u2", "a")]
    assert split.dropped == 0


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (0.0, "must be positive"),
        (-1.0, "must be positive"),
        (10.0, "leaves no training events"),
    ],
)
def test_bad_holdouts_are_config_errors(days: float, message: str) -> None:
    events = [_event("u1", "a", 0.0), _event("u1", "b", 1.0)]
    with pytest.raises(ConfigError, match=message):
        split_holdout(events, days, whole_sessions=False)


def test_a_holdout_that_leaves_no_session_to_predict_is_an_error() -> None:
    events = [_event("s1", "a", 0.0), _event("s1", "b", 0.1), _event("s2", "z", 3.0)]
    with pytest.raises(ConfigError, match="leaves no held-out events"):
        split_holdout(events, 1.0, whole_sessions=True)


def test_spec_rules_for_holdout() -> None:
    log = Path("log.tsv")
    spec = PrequentialSpec(DatasetFormat.SESSIONS, log, holdout_days=1.0)
    assert spec.resolved_protocol() == Protocol.STREAMING
    assert spec.session_protocol
    batch = PrequentialSpec(DatasetFormat.MOVIELENS, log, holdout_days=2.0, protocol=Protocol.BATCH)
    assert batch.resolved_protocol() == Protocol.BATCH
    assert not batch.session_protocol
    with pytest.raises(ConfigError, match="drop --test"):
        PrequentialSpec(DatasetFormat.SESSIONS, log, test=log, holdout_days=1.0).resolved_protocol()
    with pytest.raises(ConfigError, match="must be positive"):
        PrequentialSpec(DatasetFormat.SESSIONS, log, holdout_days=0.0).resolved_protocol()
    with pytest.raises(ConfigError, match="replays one log"):
        PrequentialSpec(
            DatasetFormat.SESSIONS, log, holdout_days=1.0, protocol=Protocol.PREQUENTIAL
        ).resolved_protocol()
    with pytest.raises(ConfigError, match="needs a test log"):
        PrequentialSpec(DatasetFormat.SESSIONS, log, protocol=Protocol.BATCH).resolved_protocol()
