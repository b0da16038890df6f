"""Segment ids (schemas.keyspace.segment_id) never collide."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.keyspace import segment_id

parts = st.text(alphabet="ab|%7C", max_size=5)


def test_the_reported_collision_is_gone() -> None:
    assert segment_id("a|b", "c", "") != segment_id("a", "b|c", "")
    assert segment_id("a%7Cb", "c", "") != segment_id("a|b", "c", "")


def test_plain_parts_keep_their_stored_form() -> None:
    assert segment_id("shop", "home", "en-GB") == "shop|home|en-GB"
    assert segment_id("shop", "pdp", "") == "shop|pdp|"


@given(st.tuples(parts, parts, parts), st.tuples(parts, parts, parts))
def test_different_triples_get_different_ids(
    x: tuple[str, str, str], y: tuple[str, str, str]
) -> None:
    assert (segment_id(*x) == segment_id(*y)) == (x == y)
