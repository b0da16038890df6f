"""TrackedCache / NeighbourCache: reservations, invalidation races, resets, bounds (no Redis)."""

from __future__ import annotations

import pytest

from serving.neighbour_cache import NeighbourCache
from serving.tracked_cache import WHOLE, TrackedCache

ROW = (("b", 3.0), ("c", 2.0), ("d", 1.0))


def test_a_filled_row_is_served_until_invalidated() -> None:
    cache = NeighbourCache(10)
    assert cache.get("k", 3) is None
    (token,) = cache.reserve(["k"])
    assert cache.get("k", 3) is None  # reserved, not filled: still a miss
    cache.fill("k", token, 3, ROW)
    assert cache.get("k", 3) is ROW
    cache.invalidate(["k", "unknown"])
    assert cache.get("k", 3) is None
    assert (cache.hits, cache.misses, cache.invalidations) == (1, 3, 1)
    assert cache.counts() == {"hit": 1, "miss": 3, "invalidated": 1}


def test_an_invalidation_between_the_reply_and_the_fill_wins() -> None:
    """Redis pushes the invalidation right after the read's reply; the fill comes later."""
    cache = NeighbourCache(10)
    (token,) = cache.reserve(["k"])
    cache.invalidate(["k"])
    cache.fill("k", token, 3, ROW)
    assert cache.get("k", 3) is None


def test_a_reset_between_the_reply_and_the_fill_wins() -> None:
    cache = NeighbourCache(10)
    (token,) = cache.reserve(["k"])
    cache.clear()  # the connection was lost: its invalidations with it
    cache.fill("k", token, 3, ROW)
    assert cache.get("k", 3) is None and cache.resets == 1


def test_only_the_newest_reservation_fills() -> None:
    cache = NeighbourCache(10)
    (old,) = cache.reserve(["k"])
    (new,) = cache.reserve(["k"])
    cache.fill("k", old, 3, (("stale", 1.0),))
    assert cache.get("k", 3) is None
    cache.fill("k", new, 3, ROW)
    assert cache.get("k", 3) is ROW


def test_a_null_invalidation_flushes_everything() -> None:
    cache = NeighbourCache(10)
    tokens = cache.reserve(["a", "b"])
    for key, token in zip(["a", "b"], tokens, strict=True):
        cache.fill(key, token, 3, ROW)
    cache.invalidate(None)  # FLUSHALL / FLUSHDB
    assert len(cache) == 0 and cache.get("a", 3) is None


def test_a_row_read_for_n_answers_n_or_fewer() -> None:
    cache = NeighbourCache(10)
    (token,) = cache.reserve(["k"])
    cache.fill("k", token, 3, ROW)
    assert cache.get("k", 2) == ROW[:2]
    assert cache.get("k", 5) is None  # the row may hold more than the 3 read
    (token,) = cache.reserve(["short"])
    cache.fill("short", token, 5, ROW)  # 3 < 5 asked: the whole row
    assert cache.get("short", 50) is ROW


def test_the_oldest_entries_go_first_when_full() -> None:
    cache = NeighbourCache(2)
    for key in ("a", "b", "c"):
        (token,) = cache.reserve([key])
        cache.fill(key, token, 3, ROW)
    assert len(cache) == 2
    assert cache.get("a", 3) is None and cache.get("c", 3) is ROW


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        NeighbourCache(0)


def test_a_whole_key_answers_every_request_and_a_prefix_only_shorter_ones() -> None:
    seen: TrackedCache[frozenset[str]] = TrackedCache(10)
    (token,) = seen.reserve(["seen"])
    members = frozenset({"a", "b"})
    seen.fill("seen", token, WHOLE, members)
    assert seen.lookup("seen", WHOLE) is members
    recent: TrackedCache[tuple[str, ...]] = TrackedCache(10)
    (token,) = recent.reserve(["recent"])
    recent.fill("recent", token, 2, ("x", "y"))  # LRANGE 0 1 returned 2: there may be more
    assert recent.lookup("recent", 2) == ("x", "y")
    assert recent.lookup("recent", 1) == ("x", "y")  # the caller takes what it needs
    assert recent.lookup("recent", 3) is None
    assert (recent.hits, recent.misses) == (2, 1)
