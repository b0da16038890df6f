"""Ids in events: bad ids, duplicate keys and pii user ids go to the dead letter with a reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.events import Exposure, Item, Outcome
from schemas.ids import PiiPolicy, Pseudonyms
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.decode import Reason, Rejected, decode
from streams.pipeline import BatchProcessor, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig, Record

NOW = 1_700_000_000.0
KEY = b"a-key-of-sixteen-bytes-or-more"


def _outcome(**fields: Any) -> bytes:
    base = {"user_id": "u1", "item_id": "i1", "event_type": "click", "ts": NOW - 10}
    return orjson.dumps({**base, **fields})


def _decode(raw: bytes, topic: Topic = Topic.OUTCOMES, **kw: Any) -> Any:
    return decode(raw, topic, max_bytes=65536, max_future_skew_s=300, now=NOW, **kw)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("user_id", "", "at least 1 character"),
        ("user_id", "   ", "only whitespace"),
        ("item_id", "i\x001", "control character U+0000"),
        ("session_id", "s\n1", "control character U+000A"),
        ("request_id", "\u2003", "only whitespace"),
    ],
)
def test_bad_ids_are_invalid(field: str, value: str, problem: str) -> None:
    result = _decode(_outcome(**{field: value}))
    assert isinstance(result, Rejected) and result.reason is Reason.INVALID
    assert field in result.error and problem in result.error


def test_bad_ids_in_nested_places_are_invalid() -> None:
    item = orjson.dumps({"item_id": "i1", "categories": ["ok", " "], "ts": NOW})
    result = _decode(item, Topic.ITEMS)
    assert isinstance(result, Rejected) and "categories.1" in result.error


def test_duplicate_keys_are_their_own_reason() -> None:
    raw = _outcome()[:-1] + b',"user_id":"u2"}'
    result = _decode(raw)
    assert isinstance(result, Rejected) and result.reason is Reason.DUPLICATE_KEY
    assert "'user_id'" in result.error


@pytest.mark.parametrize("user_id", ["jane@example.com", "+44 20 7946 0958"])
def test_pii_user_ids_are_rejected_with_reason_pii(user_id: str) -> None:
    result = _decode(_outcome(user_id=user_id), pseudonyms=Pseudonyms())
    assert isinstance(result, Rejected) and result.reason is Reason.PII
    assert "user_id looks like" in result.error and user_id not in result.error
    # an offline tool without a policy reads the event as it is
    assert isinstance(_decode(_outcome(user_id=user_id)), Outcome)


def test_pii_session_ids_are_rejected_too() -> None:
    result = _decode(_outcome(session_id="555-123-4567"), pseudonyms=Pseudonyms())
    assert isinstance(result, Rejected) and "session_id" in result.error


def test_hash_policy_replaces_pii_ids_with_the_servers_pseudonym() -> None:
    pseudonyms = Pseudonyms(PiiPolicy.HASH, KEY)
    result = _decode(
        _outcome(user_id="jane@example.com", session_id="+15551234567"), pseudonyms=pseudonyms
    )
    assert isinstance(result, Outcome)
    assert result.user_id == pseudonyms.hashed("jane@example.com")
    assert result.session_id == pseudonyms.hashed("+15551234567")
    exposure = orjson.dumps(
        {
            "request_id": "r1",
            "user_id": "jane@example.com",
            "ts": NOW - 5,
            "items": [{"item_id": "i1", "rank": 1}],
        }
    )
    decoded = _decode(exposure, Topic.EXPOSURES, pseudonyms=pseudonyms)
    assert isinstance(decoded, Exposure) and decoded.user_id == result.user_id


def test_items_are_not_checked_for_pii() -> None:
    item = orjson.dumps({"item_id": "call-555-123-4567", "ts": NOW})
    assert isinstance(_decode(item, Topic.ITEMS, pseudonyms=Pseudonyms()), Item)


async def _no_dead_letters(_letters: object) -> None:
    raise AssertionError("decoding sends nothing")


def test_the_pipeline_applies_its_policy() -> None:
    processor = BatchProcessor(
        None,  # type: ignore[arg-type]  # decoding never touches the store
        BatchPlanner(Keyspace("p"), ProcessorConfig()),
        _no_dead_letters,
        max_event_bytes=1024,
        max_future_skew_s=300,
        pseudonyms=Pseudonyms(),
    )
    messages = [
        RawMessage(Topic.OUTCOMES, "p.outcomes", 0, 0, b"k", _outcome()),
        RawMessage(Topic.OUTCOMES, "p.outcomes", 0, 1, b"k", _outcome(user_id="a@b.example")),
    ]
    (_, first), (_, second) = processor.decode_batch(messages, now=NOW)
    assert isinstance(first, Record)
    assert isinstance(second, Rejected) and second.reason is Reason.PII
