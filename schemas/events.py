"""Event contracts: ``exposure.v1``, ``outcome.v1``, ``item.v1``, ``alert.v1`` and the dead letter.

Every model is strict (unknown fields are rejected), frozen and size-bounded. Timestamps are
accepted as RFC 3339 strings or epoch seconds and held as timezone-aware UTC datetimes;
on the wire they are written back as RFC 3339 strings with a ``Z`` suffix.
Encoding is orjson (:func:`encode_event`). The ``schema`` field names the contract version.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.ids import MAX_ID_LEN as _MAX_ID_LEN
from schemas.ids import id_problem

MAX_ID_LEN = _MAX_ID_LEN  # the id contract lives in schemas.ids

MAX_STR_LEN = 256
MAX_ITEMS_PER_EXPOSURE = 200
MAX_CATEGORIES = 32
MAX_CONTEXT_KEYS = 32
# Epoch seconds outside [1990-01-01, 2200-01-01) are treated as a unit mistake (ms, µs …).
# 1990 rather than 2000: public datasets (MovieLens 100k, 1997–98) replay as outcome events.
_EPOCH_MIN = 631_152_000.0
_EPOCH_MAX = 7_258_118_400.0
# RFC 3339 date-time (``T``, ``t`` or a space between date and time; ``Z`` or ±hh:mm offset).
# datetime.fromisoformat alone is laxer (it accepts "…:00x+00:00", basic format, no offset).
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)


def _parse_ts(value: Any) -> datetime:
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string or epoch seconds, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds) or not _EPOCH_MIN <= seconds < _EPOCH_MAX:
            raise ValueError(f"epoch seconds out of range: {value!r}")
        return datetime.fromtimestamp(seconds, tz=UTC)
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("timestamp string too long")
        text = value
        if not _RFC3339.fullmatch(text):
            raise ValueError(f"not an RFC 3339 timestamp with offset: {value!r}")
        text = f"{text[:10]}T{text[11:]}"
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"not a valid RFC 3339 timestamp: {value!r} ({exc})") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp needs a timezone")
        return value.astimezone(UTC)
    raise ValueError("timestamp must be an RFC 3339 string or epoch seconds")


def _format_ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_ts),
    PlainSerializer(_format_ts, return_type=str, when_used="json"),
    Field(
        description="RFC 3339 timestamp with offset, or epoch seconds; held as UTC.",
        json_schema_extra={
            "type": ["string", "number"],
            "pattern": f"^{_RFC3339.pattern}$",  # applies to strings only
            "minimum": _EPOCH_MIN,  # applies to numbers only
            "exclusiveMaximum": _EPOCH_MAX,
        },
    ),
]


def _valid_id(value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LEN, strip_whitespace=False),
    AfterValidator(_valid_id),
    Field(
        description="Opaque identifier: 1 to 128 characters, not only whitespace, no "
        "control characters.",
        json_schema_extra={"pattern": r"^(?=.*\S)[^\x00-\x1f\x7f-\x9f]*$"},
    ),
]
ShortStr = Annotated[str, StringConstraints(max_length=MAX_STR_LEN)]


class EventType(StrEnum):
    """What a user did with an item."""

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    LIKE = "like"
    DISMISS = "dismiss"


POSITIVE_EVENT_TYPES = frozenset(EventType) - {EventType.DISMISS}


class _Event(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, str_strip_whitespace=False)


class Context(_Event):
    """Where a request was made. Known keys plus up to 32 free string keys in ``extra``."""

    tenant: ShortStr = Field("default", description="Tenant (shop, site) the request is for.")
    surface: ShortStr = Field("home", description="Page or slot, e.g. home, pdp, cart.")
    locale: ShortStr = Field("", description="Locale such as en-GB; empty when unknown.")
    extra: dict[ShortStr, ShortStr] = Field(
        default_factory=dict,
        max_length=MAX_CONTEXT_KEYS,
        description="Free string keys (device, country …).",
    )

    @property
    def segment(self) -> tuple[str, str, str]:
        return (self.tenant, self.surface, self.locale)


#: the reason of an item put in an exploration slot (answer and exposure, issue 20)
EXPLORING_REASON = "exploring"
#: ``context.extra`` key of a request's declared interests: comma-separated categories whose
#: popular items the backfill ranks first (new users, issue 20)
CONTEXT_INTERESTS = "interests"
MAX_INTERESTS = 32


def declared_interests(context: Context) -> frozenset[str]:
    """The categories of ``context.extra["interests"]`` (at most 32, blanks dropped)."""
    raw = context.extra.get(CONTEXT_INTERESTS)
    if not raw:
        return frozenset()
    return frozenset([c.strip() for c in raw.split(",") if c.strip()][:MAX_INTERESTS])


class ExposedItem(_Event):
    """One item as shown, with its 1-based rank."""

    item_id: Id = Field(description="The item shown.")
    rank: int = Field(ge=1, le=10_000, description="1-based position in the answer.")
    score: float | None = Field(None, description="Ranker score, when known.")
    reasons: list[ShortStr] | None = Field(
        None, max_length=16, description="Why the item was served (server answers)."
    )
    rules: list[Id] | None = Field(
        None, max_length=32, description="Ids of the merchandising rules that touched the item."
    )
    exploring: bool | None = Field(
        None,
        description="True when the item filled an exploration slot (reason 'exploring'); "
        "absent otherwise. Lets the analysis separate explored impressions.",
    )

    @field_validator("score")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("score must be finite")
        return value


class Exposure(_Event):
    """``exposure.v1``: what was shown to a user for one request."""

    schema_: Literal["exposure.v1"] = Field(
        "exposure.v1", alias="schema", description="Contract name; optional on its topic."
    )
    request_id: Id = Field(description="Join key with outcome.request_id.")
    user_id: Id = Field(description="Pseudonymous user (or session) the answer was for.")
    ts: Timestamp = Field(description="When the answer was served.")
    items: list[ExposedItem] = Field(
        max_length=MAX_ITEMS_PER_EXPOSURE,
        description="The items shown, at most 200, each with its 1-based rank; empty only for "
        'a failed or empty answer (``context.extra["empty"]`` set, see schemas/controls.py).',
    )
    context: Context = Field(default_factory=Context, description="Where the request was made.")
    variant: ShortStr = Field("control", description="Experiment variant that served it.")
    algo_version: ShortStr = Field("", description="Ranker version that served it.")
    latency_ms: float | None = Field(None, ge=0, description="Server-side latency.")

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _items_or_flagged_empty(self) -> Exposure:
        if not self.items and not self.context.extra.get("empty"):
            raise ValueError('items may be empty only when context.extra["empty"] is set')
        return self


class Outcome(_Event):
    """``outcome.v1``: what a user did with an item."""

    schema_: Literal["outcome.v1"] = Field(
        "outcome.v1", alias="schema", description="Contract name; optional on its topic."
    )
    user_id: Id = Field(description="Pseudonymous user (or session) who acted.")
    item_id: Id = Field(description="The item acted on.")
    event_type: EventType = Field(description="What the user did: view, click, purchase …")
    ts: Timestamp = Field(description="When it happened (event time).")
    request_id: Id | None = Field(None, description="Set when the item came from a request.")
    session_id: Id | None = Field(None, description="Session it happened in, when known.")
    value: float | None = Field(None, description="Monetary value of a purchase, etc.")
    context: Context | None = Field(None, description="Where it happened, when known.")

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be finite")
        return value

    @field_validator("event_type", mode="before")
    @classmethod
    def _event_type(cls, value: Any) -> Any:
        # strict mode would refuse a plain string for an enum; accept exactly the enum values
        if isinstance(value, str):
            try:
                return EventType(value)
            except ValueError:
                allowed = ", ".join(e.value for e in EventType)
                raise ValueError(f"unknown event_type {value!r} (allowed: {allowed})") from None
        return value


class Item(_Event):
    """``item.v1``: catalog metadata for one item (compacted topic, keyed by item_id)."""

    schema_: Literal["item.v1"] = Field(
        "item.v1", alias="schema", description="Contract name; optional on its topic."
    )
    item_id: Id = Field(description="The item described (also the message key).")
    available: bool = Field(True, description="False hides the item from every answer.")
    categories: list[Id] = Field(
        default_factory=list, max_length=MAX_CATEGORIES, description="Up to 32 categories."
    )
    tags: list[Id] = Field(
        default_factory=list, max_length=MAX_CATEGORIES, description="Up to 32 tags."
    )
    ts: Timestamp = Field(description="When this version of the metadata was written.")

    model_config = ConfigDict(populate_by_name=True)


class Severity(StrEnum):
    WARN = "warn"
    CRIT = "crit"


class Alert(_Event):
    """``alert.v1``: a monitor crossed (``firing``) or left (``resolved``) a threshold."""

    schema_: Literal["alert.v1"] = Field("alert.v1", alias="schema", description="Contract name.")
    alert_id: Id = Field(description="Stable id of the condition (kind + labels).")
    kind: ShortStr = Field(description="consumer_lag, freshness, drift_volume, …")
    state: Literal["firing", "resolved"] = Field(description="firing or resolved.")
    # strict=False: accept the enum *value* ("warn") from decoded JSON, as event_type does
    severity: Severity = Field(strict=False, description="warn or crit.")
    value: float = Field(description="Measured value that crossed (or left) the threshold.")
    threshold: float = Field(description="Threshold the value is compared with.")
    window_s: float = Field(ge=0, description="Window the value was computed over.")
    cause: ShortStr = Field(description="Human-readable cause.")
    labels: dict[ShortStr, ShortStr] = Field(
        default_factory=dict, max_length=MAX_CONTEXT_KEYS, description="topic, partition, …"
    )
    first_seen: Timestamp = Field(description="When the condition started firing.")
    ts: Timestamp = Field(description="When this alert event was emitted.")

    model_config = ConfigDict(populate_by_name=True)


class DeadLetter(_Event):
    """Envelope of a message that could not be processed, with its source coordinates."""

    schema_: Literal["deadletter.v1"] = Field(
        "deadletter.v1", alias="schema", description="Contract name."
    )
    source_topic: ShortStr = Field(description="Topic the message was read from.")
    partition: int = Field(ge=-1, description="Source partition; -1 when unknown.")
    offset: int = Field(ge=-1, description="Source offset; -1 when unknown.")
    raw_b64: str = Field(description="The original bytes, base64; cut to max_event_bytes.")
    truncated: bool = Field(False, description="True when raw_b64 holds only a prefix.")
    reason: ShortStr = Field(description="Machine-readable reason (not_json, invalid, …).")
    error: str = Field(max_length=4096, description="Human-readable detail.")
    ts: Timestamp = Field(description="When the message was dead-lettered.")

    model_config = ConfigDict(populate_by_name=True)


EVENT_MODELS: dict[str, type[_Event]] = {
    "exposure.v1": Exposure,
    "outcome.v1": Outcome,
    "item.v1": Item,
    "alert.v1": Alert,
    "deadletter.v1": DeadLetter,
}


def encode_event(event: BaseModel) -> bytes:
    """Serialise an event to compact JSON bytes (with its ``schema`` field)."""
    return orjson.dumps(event.model_dump(mode="json", by_alias=True, exclude_none=True))


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (which value wins differs between parsers)."""


def _key_count(obj: dict[str, Any]) -> int:
    """Keys of ``obj`` and of every object nested in it (plain recursion: the fast path)."""
    count = len(obj)
    for value in obj.values():
        kind = type(value)
        if kind is dict:
            count += _key_count(value)
        elif kind is list:
            count += _list_key_count(value)
    return count


def _list_key_count(items: list[Any]) -> int:
    count = 0
    for value in items:
        kind = type(value)
        if kind is dict:
            count += _key_count(value)
        elif kind is list:
            count += _list_key_count(value)
    return count


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"duplicate key {key[:100]!r} in a JSON object")
            seen.add(key)
    return obj


def loads_event(raw: bytes) -> Any:
    """Parse event JSON (orjson); raise :class:`DuplicateKeyError` on a key given twice.

    orjson keeps the last of duplicate keys silently. Fast path: with JSON whitespace
    deleted, every key of the raw text ends with ``":``, so when the text holds no more
    ``":`` than the parsed objects hold keys, no key was dropped. Otherwise (a value
    containing ``":``, or a real duplicate) the stdlib parser decides exactly. About 2.5×
    the time of ``orjson.loads`` alone for a typical outcome.
    Raises ``orjson.JSONDecodeError`` (a ValueError) for text that is not JSON.
    """
    data = orjson.loads(raw)
    kind = type(data)
    if kind is dict:
        keys = _key_count(data)
    elif kind is list:
        keys = _list_key_count(data)
    else:
        return data
    if raw.translate(None, b" \t\n\r").count(b'":') == keys:
        return data
    json.loads(raw, object_pairs_hook=_refuse_duplicates)
    return data
