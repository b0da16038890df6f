"""The pipeline's decode step, pure: each message keeps its place, with a record or a reason."""

from __future__ import annotations

import orjson

from schemas.events import Outcome
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streams.decode import Reason, Rejected
from streams.pipeline import BatchProcessor, RawMessage
from streams.processor import BatchPlanner, ProcessorConfig, Record

NOW = 1_700_000_000.0


async def _no_dead_letters(_letters: object) -> None:
    raise AssertionError("decoding sends nothing")


def _processor() -> BatchProcessor:
    return BatchProcessor(
        None,  # type: ignore[arg-type]  # decoding never touches the store
        BatchPlanner(Keyspace("p"), ProcessorConfig()),
        _no_dead_letters,
        max_event_bytes=1024,
        max_future_skew_s=300,
    )


def _message(offset: int, value: bytes | None) -> RawMessage:
    return RawMessage(Topic.OUTCOMES, "p.outcomes", 3, offset, b"u1", value)


def _outcome(ts: float) -> bytes:
    return orjson.dumps({"user_id": "u1", "item_id": "i1", "event_type": "click", "ts": ts})


def test_decode_batch_keeps_order_coordinates_and_reasons() -> None:
    messages = [
        _message(10, _outcome(NOW - 5)),
        _message(11, b"{not json"),
        _message(12, _outcome(NOW + 3600)),  # an hour ahead: beyond the 300 s skew
        _message(13, None),
        _message(14, b"x" * 2048),
    ]
    decoded = _processor().decode_batch(messages, now=NOW)
    assert [m for m, _ in decoded] == messages
    record = decoded[0][1]
    assert isinstance(record, Record)
    assert (record.topic, record.partition, record.offset) == (Topic.OUTCOMES, 3, 10)
    assert isinstance(record.event, Outcome) and record.event.item_id == "i1"
    reasons = [d.reason for _, d in decoded[1:] if isinstance(d, Rejected)]
    assert reasons == [
        Reason.NOT_JSON,
        Reason.FUTURE_TIMESTAMP,
        Reason.NOT_JSON,
        Reason.OVERSIZED,
    ]
