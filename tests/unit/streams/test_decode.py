"""Example-based tests of streams.decode: one per rejection reason, plus timestamps and ids."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from schemas.events import Exposure, Item, Outcome
from schemas.topics import Topic
from streams.decode import Reason, Rejected, dead_letter, decode

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
MAX_BYTES = 64 * 1024
SKEW = 300.0


def run(data: Any, topic: Topic = Topic.OUTCOMES) -> Outcome | Exposure | Item | Rejected:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return decode(raw, topic, max_bytes=MAX_BYTES, max_future_skew_s=SKEW, now=NOW)


def outcome(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": "outcome.v1",
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "click",
        "ts": "2024-05-01T11:59:00Z",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def rejected(result: object, reason: Reason) -> Rejected:
    assert isinstance(result, Rejected), result
    assert result.reason is reason, result
    assert result.error
    return result


def test_valid_events_of_each_topic() -> None:
    assert isinstance(run(outcome()), Outcome)
    exposure = {
        "request_id": "r1",
        "user_id": "u1",
        "ts": NOW,
        "items": [{"item_id": "a", "rank": 1, "score": 0.5}],
    }
    assert isinstance(run(exposure, Topic.EXPOSURES), Exposure)
    assert isinstance(run({"item_id": "a", "ts": NOW}, Topic.ITEMS), Item)


def test_schema_field_is_optional_on_its_own_topic() -> None:
    event = run(outcome(schema=...))
    assert isinstance(event, Outcome)
    assert event.schema_ == "outcome.v1"


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"hello", b"", b"{'a': 1}", b"NaN"])
def test_not_json(raw: bytes) -> None:
    rejected(run(raw), Reason.NOT_JSON)


def test_none_value_is_not_json() -> None:
    result = decode(None, Topic.OUTCOMES, max_bytes=MAX_BYTES, max_future_skew_s=SKEW, now=NOW)
    rejected(result, Reason.NOT_JSON)


def test_truncated_json() -> None:
    raw = orjson.dumps(outcome())
    result = rejected(run(raw[: len(raw) // 2]), Reason.NOT_JSON)
    assert "not JSON" in result.error


@pytest.mark.parametrize("data", [[outcome()], "text", 5, None, True])
def test_json_but_not_an_object(data: Any) -> None:
    rejected(run(data), Reason.NOT_OBJECT)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", 5),
        ("item_id", ["i1"]),
        ("ts", True),
        ("ts", {"seconds": 1}),
        ("value", "9.99"),
        ("request_id", 7),
        ("context", "home"),
        ("event_type", 3),  # a non-string event_type is a wrong type, not an unknown type
    ],
)
def test_wrong_types_are_invalid(field: str, value: Any) -> None:
    result = rejected(run(outcome(**{field: value})), Reason.INVALID)
    assert field in result.error


def test_wrong_type_inside_exposure_items() -> None:
    data = {"request_id": "r", "user_id": "u", "ts": NOW, "items": [{"item_id": "a", "rank": "1"}]}
    result = rejected(run(data, Topic.EXPOSURES), Reason.INVALID)
    assert "items.0.rank" in result.error


@pytest.mark.parametrize("schema", ["outcome.v2", "exposure.v1", "item.v1", "", 1, None])
def test_bad_schema_is_unknown_event_type(schema: Any) -> None:
    result = rejected(run(outcome(schema=schema)), Reason.UNKNOWN_EVENT_TYPE)
    assert "outcomes" in result.error


@pytest.mark.parametrize("event_type", ["teleport", "CLICK", ""])
def test_bad_event_type_is_unknown_event_type(event_type: str) -> None:
    result = rejected(run(outcome(event_type=event_type)), Reason.UNKNOWN_EVENT_TYPE)
    assert "event_type" in result.error


@pytest.mark.parametrize("field", ["user_id", "item_id", "event_type", "ts"])
def test_missing_required_field(field: str) -> None:
    result = rejected(run(outcome(**{field: ...})), Reason.INVALID)
    assert field in result.error
    assert "required" in result.error.lower()


def test_unknown_fields_rejected_at_top_level_and_nested() -> None:
    result = rejected(run(outcome(email="a@b.c")), Reason.INVALID)
    assert "email" in result.error
    result = rejected(run(outcome(context={"tenant": "t", "device": "x"})), Reason.INVALID)
    assert "device" in result.error


def test_future_timestamp_beyond_skew() -> None:
    result = rejected(run(outcome(ts=NOW + SKEW + 60)), Reason.FUTURE_TIMESTAMP)
    assert "future" in result.error
    assert isinstance(run(outcome(ts=NOW + SKEW - 1)), Outcome)


def test_two_megabyte_payload_is_oversized() -> None:
    raw = orjson.dumps(outcome(item_id="x" * (2 * 1024 * 1024)))
    result = rejected(run(raw), Reason.OVERSIZED)
    assert str(len(raw)) in result.error


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-05-01T11:00:00Z", datetime(2024, 5, 1, 11, tzinfo=UTC)),
        ("2024-05-01T13:00:00+02:00", datetime(2024, 5, 1, 11, tzinfo=UTC)),
        ("2024-05-01t06:30:00.5-04:30", datetime(2024, 5, 1, 11, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01 11:00:00z", datetime(2024, 5, 1, 11, tzinfo=UTC)),
        (1714561200, datetime(2024, 5, 1, 11, tzinfo=UTC)),
        (1714561200.25, datetime(2024, 5, 1, 11, 0, 0, 250000, tzinfo=UTC)),
        (874724710, datetime(1997, 9, 20, 3, 5, 10, tzinfo=UTC)),  # MovieLens 100k era
    ],
)
def test_rfc3339_and_epoch_seconds_are_stored_as_utc(ts: Any, expected: datetime) -> None:
    event = run(outcome(ts=ts))
    assert isinstance(event, Outcome)
    assert event.ts == expected
    assert event.ts.utcoffset() is not None
    assert event.ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert orjson.loads(event.model_dump_json(by_alias=True))["ts"].endswith("Z")


@pytest.mark.parametrize(
    "ts",
    [
        "2024-05-01T11:00:00",  # no offset
        "2024-05-01",
        "2024-05-01T11:00:00x+00:00",  # fromisoformat alone would accept this
        "20240501T110000Z",
        "2024-02-30T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # out of datetime range once moved to UTC
        "9999-12-31T23:59:59-01:00",
        "yesterday",
        1714561200000,  # milliseconds: a unit mistake
        -5,
    ],
)
def test_bad_timestamps_are_invalid(ts: Any) -> None:
    result = rejected(run(outcome(ts=ts)), Reason.INVALID)
    assert result.error.startswith("ts:")


@pytest.mark.parametrize("field", ["user_id", "item_id", "request_id", "session_id"])
def test_ids_empty_or_longer_than_128_rejected(field: str) -> None:
    rejected(run(outcome(**{field: ""})), Reason.INVALID)
    rejected(run(outcome(**{field: "x" * 129})), Reason.INVALID)
    assert isinstance(run(outcome(**{field: "x" * 128})), Outcome)


def test_dead_letter_keeps_raw_bytes_and_reason() -> None:
    raw = b'{"user_id": 5}'
    result = run(raw)
    assert isinstance(result, Rejected)
    letter = dead_letter(
        raw, result, source_topic="p.outcomes", partition=1, offset=9, max_bytes=8, now=NOW
    )
    assert letter.truncated
    assert base64.b64decode(letter.raw_b64) == raw[:8]
    assert letter.reason == result.reason.value
    assert letter.ts == datetime.fromtimestamp(NOW, tz=UTC)
