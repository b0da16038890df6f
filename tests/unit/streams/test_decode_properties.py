"""Property-based tests of streams.decode: whatever the bytes, decode is total and honest.

For every input and topic: no exception escapes; the result is an event of the topic's model
or a Rejected; every Rejected becomes a DeadLetter (which must not raise either) whose
``raw_b64`` decodes back to the input, or to its prefix when the input was too long.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas.events import EventType, Exposure, Item, Outcome, encode_event
from schemas.topics import Topic
from streams.decode import Reason, Rejected, dead_letter, decode

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
SKEW = 300.0
TOPICS = (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS)
MODEL: dict[Topic, type[BaseModel]] = {
    Topic.OUTCOMES: Outcome,
    Topic.EXPOSURES: Exposure,
    Topic.ITEMS: Item,
}
REQUIRED = {
    Topic.OUTCOMES: ("user_id", "item_id", "event_type", "ts"),
    Topic.EXPOSURES: ("request_id", "user_id", "ts", "items"),
    Topic.ITEMS: ("item_id", "ts"),
}

settings.register_profile(
    "decode", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150
)
settings.load_profile("decode")

# --- strategies ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
# valid ids (schemas.ids.id_problem): no control character, not only whitespace
ids = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=24).filter(
    str.strip
)
short = st.text(max_size=24)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
offsets = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
timestamps = st.one_of(
    st.floats(min_value=631_152_000, max_value=NOW),
    st.integers(min_value=631_152_000, max_value=int(NOW)),
    st.builds(
        lambda d, tz: d.replace(tzinfo=UTC).astimezone(tz).isoformat(),
        st.datetimes(min_value=datetime(1991, 1, 1), max_value=datetime(2024, 4, 30)),
        offsets,
    ),
)
contexts = st.fixed_dictionaries(
    {},
    optional={
        "tenant": short,
        "surface": short,
        "locale": short,
        "extra": st.dictionaries(short, short, max_size=3),
    },
)
outcomes = st.fixed_dictionaries(
    {
        "user_id": ids,
        "item_id": ids,
        "event_type": st.sampled_from([e.value for e in EventType]),
        "ts": timestamps,
    },
    optional={
        "schema": st.just("outcome.v1"),
        "request_id": ids,
        "session_id": ids,
        "value": finite,
        "context": contexts,
    },
)
exposures = st.fixed_dictionaries(
    {
        "request_id": ids,
        "user_id": ids,
        "ts": timestamps,
        "items": st.lists(
            st.fixed_dictionaries(
                {"item_id": ids, "rank": st.integers(1, 10_000)}, optional={"score": finite}
            ),
            min_size=1,
            max_size=5,
        ),
    },
    optional={
        "schema": st.just("exposure.v1"),
        "context": contexts,
        "variant": short,
        "algo_version": short,
        "latency_ms": st.floats(min_value=0, max_value=1e6),
    },
)
items = st.fixed_dictionaries(
    {"item_id": ids, "ts": timestamps},
    optional={
        "schema": st.just("item.v1"),
        "available": st.booleans(),
        "categories": st.lists(ids, max_size=4),
        "tags": st.lists(ids, max_size=4),
    },
)
VALID = {Topic.OUTCOMES: outcomes, Topic.EXPOSURES: exposures, Topic.ITEMS: items}


def dumps(value: Any, style: int) -> bytes:
    """Serialise like different producers would: orjson, or stdlib json (ASCII or not)."""
    if style == 0:
        try:
            return orjson.dumps(value)
        except TypeError:  # orjson refuses integers beyond 64 bits
            return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=style == 1).encode()


def _other_type(old: type, value: Any) -> bool:
    return type(value) is not old


@st.composite
def mutated(draw: st.DrawFn, topic: Topic) -> dict[str, Any]:
    """A valid event with fields dropped, types swapped, values replaced or fields added."""
    event: dict[str, Any] = draw(VALID[topic])
    for _ in range(draw(st.integers(1, 3))):
        target = event
        nested = [k for k, v in event.items() if isinstance(v, dict | list) and v]
        go_deeper: bool = draw(st.booleans())
        if nested and go_deeper:
            inner = event[draw(st.sampled_from(sorted(nested)))]
            target = inner[0] if isinstance(inner, list) else inner
            if not isinstance(target, dict) or not target:
                continue
        keys = sorted(target)
        op = draw(st.sampled_from(["drop", "swap", "replace", "add"]))
        if op == "add" or not keys:
            target[draw(st.text(max_size=12))] = draw(json_values)
            continue
        key = draw(st.sampled_from(keys))
        if op == "drop":
            del target[key]
        elif op == "swap":
            target[key] = draw(json_values.filter(partial(_other_type, type(target[key]))))
        else:
            target[key] = draw(json_scalars)
    return event


def check(raw: bytes, topic: Topic, max_bytes: int) -> Outcome | Exposure | Item | Rejected:
    """The properties every input must satisfy; returns the result for further checks."""
    result = decode(raw, topic, max_bytes=max_bytes, max_future_skew_s=SKEW, now=NOW)
    if isinstance(result, Rejected):
        assert isinstance(result.reason, Reason)
        assert isinstance(result.error, str)
        assert result.error
        letter = dead_letter(
            raw,
            result,
            source_topic=f"test.{topic.value}",
            partition=0,
            offset=42,
            max_bytes=max_bytes,
            now=NOW,
        )
        body = base64.b64decode(letter.raw_b64, validate=True)
        assert letter.truncated == (len(raw) > max_bytes)
        assert body == raw[:max_bytes]
        assert letter.reason == result.reason.value
        encoded = encode_event(letter)  # the envelope itself must serialise
        assert orjson.loads(encoded)["schema"] == "deadletter.v1"
        return result
    assert isinstance(result, MODEL[topic]), (topic, result)
    # an accepted event survives its own wire encoding unchanged
    again = decode(encode_event(result), topic, max_bytes=2**31, max_future_skew_s=SKEW, now=NOW)
    assert again == result
    return result


# --- properties -----------------------------------------------------------------------------


@given(st.binary(max_size=512), st.sampled_from(TOPICS), st.sampled_from([8, 64, 64 * 1024]))
def test_arbitrary_bytes(raw: bytes, topic: Topic, max_bytes: int) -> None:
    check(raw, topic, max_bytes)


@given(json_values, st.sampled_from(TOPICS), st.integers(0, 2))
def test_arbitrary_json(value: Any, topic: Topic, style: int) -> None:
    result = check(dumps(value, style), topic, 64 * 1024)
    if not isinstance(value, dict):
        assert isinstance(result, Rejected)
        assert result.reason is Reason.NOT_OBJECT


@given(st.data(), st.sampled_from(TOPICS), st.integers(0, 2))
def test_valid_events_are_accepted(data: st.DataObject, topic: Topic, style: int) -> None:
    event = data.draw(VALID[topic])
    result = check(dumps(event, style), topic, 64 * 1024)
    assert not isinstance(result, Rejected), result


@given(st.data(), st.sampled_from(TOPICS), st.integers(0, 2), st.sampled_from([32, 64 * 1024]))
def test_mutated_events(data: st.DataObject, topic: Topic, style: int, max_bytes: int) -> None:
    check(dumps(data.draw(mutated(topic)), style), topic, max_bytes)


@given(st.data(), st.sampled_from(TOPICS))
def test_dropping_a_required_field_always_rejects(data: st.DataObject, topic: Topic) -> None:
    event = data.draw(VALID[topic])
    del event[data.draw(st.sampled_from(REQUIRED[topic]))]
    result = check(orjson.dumps(event), topic, 64 * 1024)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.INVALID


@given(st.data(), st.sampled_from(TOPICS), json_values)
def test_unknown_top_level_field_always_rejects(
    data: st.DataObject, topic: Topic, value: Any
) -> None:
    event = data.draw(VALID[topic])
    known = MODEL[topic].model_fields.keys() | {"schema"}
    name = data.draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in known))
    event[name] = value
    result = check(dumps(event, 0), topic, 2**20)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.INVALID
