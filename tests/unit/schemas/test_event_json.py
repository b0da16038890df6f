"""Event JSON parsing (schemas.events.loads_event): duplicate keys are refused, exactly."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import DuplicateKeyError, loads_event


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id":"a","user_id":"b"}',
        b'{"user_id" : "a", "user_id":"b"}',
        b'{"context":{"tenant":"x","tenant":"y"}}',
        b'{"items":[{"item_id":"a","rank":1,"rank":2}]}',
        b'{"a":"x\\":y","a":1}',
    ],
)
def test_duplicate_keys_are_refused(raw: bytes) -> None:
    with pytest.raises(DuplicateKeyError, match="duplicate key"):
        loads_event(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":"x\\":y","b":{"c":"\\":"}}',  # ": inside values
        b'{"a" :1, "b"\n:2}',  # spaced colons
        b'[{"a":1},{"a":1}]',  # the same key in two objects
        b'"just a string"',
        b"{}",
    ],
)
def test_distinct_keys_pass(raw: bytes) -> None:
    assert loads_event(raw) == orjson.loads(raw)


def _has_duplicates(raw: bytes) -> bool:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise KeyError
        return dict(pairs)

    try:
        json.loads(raw, object_pairs_hook=hook)
    except KeyError:
        return True
    return False


keys = st.sampled_from(["a", "b", 'q"', "c:", '":'])
scalars = st.none() | st.integers() | st.text(alphabet='ab":{} ', max_size=6)
objects = st.recursive(
    st.lists(st.tuples(keys, scalars), max_size=4),
    lambda inner: st.lists(st.tuples(keys, inner), max_size=3),
    max_leaves=10,
)


def _render(pairs: Any, spaced: bool) -> str:
    if not isinstance(pairs, list):
        return json.dumps(pairs)
    sep = " : " if spaced else ":"
    return "{" + ",".join(json.dumps(k) + sep + _render(v, spaced) for k, v in pairs) + "}"


@given(objects, st.booleans())
def test_fast_path_agrees_with_the_exact_parser(pairs: Any, spaced: bool) -> None:
    raw = _render(pairs, spaced).encode()
    if _has_duplicates(raw):
        with pytest.raises(DuplicateKeyError):
            loads_event(raw)
    else:
        assert loads_event(raw) == orjson.loads(raw)
