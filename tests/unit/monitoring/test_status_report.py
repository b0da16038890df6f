"""``streamrec status`` explains a stale freshness line: historical data, stopped producers
or a worker that is behind (newest event time vs wall clock, consumer lag)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from monitoring.health import HealthThresholds
from monitoring.monitor_io import FreshnessReading, OffsetSample
from monitoring.status_report import HISTORICAL_HINT, Status, StatusInputs, build_status

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40+00:00
TH = HealthThresholds(lag_warn=100, lag_crit=1000, freshness_warn_s=60, freshness_crit_s=300)
#: 1998-04-22T23:10:00+00:00, the end of a MovieLens-100k style log
OLD = 893_286_600.0


def _status(
    *,
    newest: Mapping[str, float],
    last_write: float | None,
    ends: Mapping[tuple[str, int], int],
    committed: Mapping[tuple[str, int], int],
    monitors: Sequence[Mapping[str, Any]] = (),
) -> Status:
    return build_status(
        TH,
        StatusInputs(
            now=NOW,
            group="g",
            offsets=OffsetSample(at=NOW, ends=dict(ends), committed=dict(committed)),
            later_ends=None,
            rate_window_s=0.0,
            freshness=FreshnessReading(dict(newest), last_write=last_write),
            workers=[],
            monitors=monitors,
            freshness_topics=("outcomes",),
        ),
    )


def _line(status: Status, subject: str, metric: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = status.doc["lines"]
    (line,) = [x for x in lines if x["subject"] == subject and x["metric"] == metric]
    return line


CAUGHT_UP = {("outcomes", 0): 70_000, ("outcomes", 1): 278}


def test_a_replayed_historical_log_is_reported_as_such() -> None:
    # the worker processed the whole log (lag 0) and wrote state 20 s ago; the newest event
    # is from 1998
    status = _status(
        newest={"outcomes": OLD},
        last_write=NOW - 20,
        ends=CAUGHT_UP,
        committed=CAUGHT_UP,
    )
    line = _line(status, "outcomes", "newest_event_age_s")
    assert line["level"] == "CRIT"  # still measured against the wall clock, but explained
    assert line["value"] == NOW - OLD
    assert line["detail"] == (
        "newest event 1998-04-22T23:10:00+00:00 vs wall clock 2025-06-15T15:06:40+00:00 "
        f"(27.1 y behind), consumer lag 0: {HISTORICAL_HINT}"
    )
    assert "historical data?" in status.render()
    topic = status.doc["topics"]["outcomes"]
    assert topic["historical"] is True
    assert topic["newest_event_at"] == "1998-04-22T23:10:00+00:00"
    assert _line(status, "state", "state_write_age_s")["level"] == "OK"
    orjson.dumps(status.doc)


def test_a_recent_replay_of_days_old_events_is_historical_too() -> None:
    status = _status(
        newest={"outcomes": NOW - 3 * 86400},
        last_write=NOW - 1,
        ends=CAUGHT_UP,
        committed=CAUGHT_UP,
    )
    detail = _line(status, "outcomes", "newest_event_age_s")["detail"]
    assert "(3 d behind), consumer lag 0: historical data?" in detail


def test_stopped_producers_are_not_called_historical() -> None:
    # the last state write followed the newest event at once: live events that stopped
    status = _status(
        newest={"outcomes": NOW - 400},
        last_write=NOW - 399,
        ends=CAUGHT_UP,
        committed=CAUGHT_UP,
    )
    line = _line(status, "outcomes", "newest_event_age_s")
    assert line["level"] == "CRIT"
    assert line["detail"] == (
        "no new event since 2025-06-15T15:00:00+00:00 (7 min ago), consumer lag 0: "
        "producers stopped? (`streamrec monitor` reports silent_for_s)"
    )
    assert status.doc["topics"]["outcomes"]["historical"] is False


def test_a_worker_behind_is_not_called_historical() -> None:
    # old events, state written long after them, but messages wait: the worker is behind
    status = _status(
        newest={"outcomes": OLD},
        last_write=NOW - 5,
        ends=CAUGHT_UP,
        committed={("outcomes", 0): 69_000, ("outcomes", 1): 278},
    )
    line = _line(status, "outcomes", "newest_event_age_s")
    assert line["detail"] == (
        "newest processed event 1998-04-22T23:10:00+00:00 (27.1 y ago); "
        "1000 messages wait: worker behind or stuck"
    )
    assert status.doc["topics"]["outcomes"]["historical"] is False


def test_fresh_and_never_seen_lines_keep_their_detail() -> None:
    fresh = _status(
        newest={"outcomes": NOW - 5},
        last_write=NOW - 5,
        ends=CAUGHT_UP,
        committed=CAUGHT_UP,
    )
    line = _line(fresh, "outcomes", "newest_event_age_s")
    assert (line["level"], line["detail"]) == ("OK", "seconds (warn 60)")
    assert fresh.doc["topics"]["outcomes"]["newest_event_at"] == "2025-06-15T15:06:35+00:00"

    never = _status(newest={}, last_write=None, ends=CAUGHT_UP, committed=CAUGHT_UP)
    line = _line(never, "outcomes", "newest_event_age_s")
    assert (line["level"], line["detail"]) == ("CRIT", "nothing seen yet")
    assert never.doc["topics"]["outcomes"]["newest_event_at"] is None
    assert never.doc["topics"]["outcomes"]["historical"] is False


def test_the_monitors_freshness_alert_carries_the_hint_on_historical_topics() -> None:
    alert = {
        "alert_id": "freshness:topic=outcomes",
        "kind": "freshness",
        "labels": {"topic": "outcomes"},
        "severity": "CRIT",
        "value": NOW - OLD,
        "threshold": 300.0,
        "cause": "newest processed outcomes event is 856713400 s old",
        "first_seen": NOW - 30,
    }
    monitor = {
        "role": "monitor",
        "instance": "m",
        "ts": NOW - 1,
        "report": {"level": "CRIT", "lines": [], "alerts": [alert]},
    }
    status = _status(
        newest={"outcomes": OLD},
        last_write=NOW - 20,
        ends=CAUGHT_UP,
        committed=CAUGHT_UP,
        monitors=[monitor],
    )
    detail = _line(status, "freshness:topic=outcomes", "alert")["detail"]
    assert detail.endswith(f"856713400 s old; {HISTORICAL_HINT}")
