"""Decoding and validation of raw Kafka messages into events, or a dead-letter reason.

Pure and total: :func:`decode` never raises, whatever the bytes. Each failure carries a
machine-readable ``reason`` (used as the Prometheus label and in the dead-letter envelope)
and a precise human-readable ``error``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.events import (
    EVENT_MODELS,
    DeadLetter,
    DuplicateKeyError,
    Exposure,
    Item,
    Outcome,
    loads_event,
)
from schemas.ids import PiiRefused, Pseudonyms
from schemas.topics import Topic

#: Which contracts each logical topic accepts.
ACCEPTED: dict[Topic, tuple[str, ...]] = {
    Topic.OUTCOMES: ("outcome.v1",),
    Topic.EXPOSURES: ("exposure.v1",),
    Topic.ITEMS: ("item.v1",),
}
_DEFAULT_SCHEMA: dict[Topic, str] = {topic: names[0] for topic, names in ACCEPTED.items()}
MAX_ERROR_LEN = 1000


class Reason(StrEnum):
    """Why a message went to the dead-letter topic."""

    OVERSIZED = "oversized"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    INVALID = "invalid"
    FUTURE_TIMESTAMP = "future_timestamp"
    DUPLICATE_KEY = "duplicate_key"
    PII = "pii"


Event = Outcome | Exposure | Item


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that failed decoding: its reason and a one-paragraph explanation."""

    reason: Reason
    error: str


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"… and {more} more")
    return "; ".join(parts)


def decode(
    raw: bytes | None,
    topic: Topic,
    *,
    max_bytes: int,
    max_future_skew_s: float,
    now: float,
    pseudonyms: Pseudonyms | None = None,
) -> Event | Rejected:
    """Decode one message value for ``topic``; return the event or why it was rejected.

    ``pseudonyms``: the ``pii_policy`` for user and session ids (None = not checked, as in
    offline tools); under ``hash`` the returned event carries the pseudonyms.
    """
    if raw is None:
        return Rejected(Reason.NOT_JSON, "empty message value (tombstone or null)")
    if len(raw) > max_bytes:
        return Rejected(Reason.OVERSIZED, f"payload of {len(raw)} bytes exceeds {max_bytes}")
    try:
        data: Any = loads_event(raw)
    except DuplicateKeyError as exc:
        return Rejected(Reason.DUPLICATE_KEY, str(exc)[:MAX_ERROR_LEN])
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        return Rejected(Reason.NOT_JSON, f"not JSON: {exc}"[:MAX_ERROR_LEN])
    if not isinstance(data, dict):
        return Rejected(Reason.NOT_OBJECT, f"expected a JSON object, got {type(data).__name__}")
    schema = data.get("schema", _DEFAULT_SCHEMA.get(topic))
    accepted = ACCEPTED.get(topic, ())
    if schema not in accepted:
        return Rejected(
            Reason.UNKNOWN_EVENT_TYPE,
            f"event type {str(schema)[:100]!r} is not accepted on topic {topic.value!r} "
            f"(accepted: {', '.join(accepted) or 'none'})",
        )
    model = EVENT_MODELS[schema]
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        reason = Reason.INVALID
        # an unknown event_type *string* is an unknown event type; a non-string is a wrong type
        if any(
            err["loc"] == ("event_type",) and isinstance(err.get("input"), str)
            for err in exc.errors(include_url=False)
        ):
            reason = Reason.UNKNOWN_EVENT_TYPE
        return Rejected(reason, _format_validation(exc)[:MAX_ERROR_LEN])
    except (ValueError, TypeError, OverflowError) as exc:  # defensive: validators are total
        return Rejected(Reason.INVALID, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LEN])
    ts: datetime = event.ts  # type: ignore[attr-defined]
    skew = ts.timestamp() - now
    if skew > max_future_skew_s:
        return Rejected(
            Reason.FUTURE_TIMESTAMP,
            f"ts {ts.isoformat()} is {skew:.0f} s in the future (limit {max_future_skew_s:.0f} s)",
        )
    assert isinstance(event, Outcome | Exposure | Item)
    if pseudonyms is not None and not isinstance(event, Item):
        try:
            return _pseudonymous(event, pseudonyms)
        except PiiRefused as exc:
            return Rejected(Reason.PII, str(exc))
    return event


def _pseudonymous(event: Outcome | Exposure, pseudonyms: Pseudonyms) -> Outcome | Exposure:
    update: dict[str, str | None] = {}
    user_id = pseudonyms.apply(event.user_id, "user_id")
    if user_id != event.user_id:
        update["user_id"] = user_id
    if isinstance(event, Outcome) and event.session_id is not None:
        session_id = pseudonyms.apply(event.session_id, "session_id")
        if session_id != event.session_id:
            update["session_id"] = session_id
    return event.model_copy(update=update) if update else event


def dead_letter(
    raw: bytes | None,
    rejected: Rejected,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    max_bytes: int,
    now: float,
) -> DeadLetter:
    """Build the dead-letter envelope for a rejected message (raw bytes kept, base64)."""
    body = raw or b""
    truncated = len(body) > max_bytes
    if truncated:
        body = body[:max_bytes]
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        raw_b64=base64.b64encode(body).decode("ascii"),
        truncated=truncated,
        reason=rejected.reason.value,
        error=rejected.error[:4096],
        ts=datetime.fromtimestamp(now, tz=UTC),
    )


def event_to_json(event: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of an event (with its ``schema`` field)."""
    return event.model_dump(mode="json", by_alias=True, exclude_none=True)
