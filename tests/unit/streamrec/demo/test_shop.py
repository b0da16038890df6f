"""The demo's synthetic shop: catalog shape, planted taste, outcomes and prequential hits."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from schemas.events import EventType
from streamrec.demo.shop import Hits, Shop, ShopConfig
from streamrec.demo.summary import Summary, percentile


def test_catalog_has_every_item_in_one_category_and_chain() -> None:
    shop = Shop(ShopConfig(items=60, categories=6, users=10))
    events = shop.item_events()
    assert [e.item_id for e in events] == shop.items
    assert all(len(e.categories) == 1 for e in events)
    assert sorted(i for chain in shop.chain.values() for i in chain) == sorted(shop.items)
    assert {len(chain) for chain in shop.chain.values()} == {10}


def test_same_seed_same_shop_and_choices() -> None:
    a, b = Shop(ShopConfig(seed=3)), Shop(ShopConfig(seed=3))
    assert a.category_of == b.category_of
    user = next(iter(a.users))
    a.start_session(user)
    b.start_session(user)
    assert [a.act(user, [], None).target for _ in range(5)] == [
        b.act(user, [], None).target for _ in range(5)
    ]


def test_targets_follow_the_favourite_category_mostly() -> None:
    shop = Shop(ShopConfig(users=50, seed=11))
    total = favourite = 0
    for user in shop.users:
        shop.start_session(user)
        for _ in range(6):
            step = shop.act(user, [], None)
            total += 1
            favourite += shop.category_of[step.target] == shop.users[user].favourite
    assert favourite / total > 0.85


def test_hit_is_a_click_with_request_id_miss_is_an_organic_view() -> None:
    cfg = ShopConfig(seed=5, add_to_cart=0.0, click_other=0.0, follow_chain=1.0, explore=0.0)
    shop = Shop(cfg)
    user = next(iter(shop.users))
    shop.start_session(user)
    first = shop.act(user, [], None)
    assert not first.hit
    [view] = first.outcomes
    assert view.event_type is EventType.VIEW and view.request_id is None
    assert view.session_id == f"{user}-s1"
    chain = shop.chain[shop.users[user].favourite]
    successor = chain[(chain.index(first.target) + 1) % len(chain)]
    second = shop.act(user, ["other", successor], "req-1")
    assert second.target == successor and second.hit
    [click] = second.outcomes
    assert click.event_type is EventType.CLICK and click.request_id == "req-1"


def test_chain_successor_is_recommended_target() -> None:
    shop = Shop(ShopConfig(seed=9, follow_chain=1.0, explore=0.0, click_other=0.0))
    user = next(iter(shop.users))
    fav = shop.users[user].favourite
    chain = shop.chain[fav]
    shop.users[user].last_item = chain[0]
    shop.users[user].seen.add(chain[0])
    shop.start_session(user)
    step = shop.act(user, [chain[1], chain[5]], "r")
    assert step.target == chain[1] and step.hit


def test_popularity_baseline_counts_outcomes_and_skips_seen() -> None:
    shop = Shop(ShopConfig(seed=1, add_to_cart=0.0, click_other=0.0, explore=0.0))
    users = list(shop.users)
    for user in users[:40]:
        shop.start_session(user)
        shop.act(user, [], None)
    fresh = users[-1]
    top = shop.popularity_top(fresh, 3)
    assert len(top) == 3
    shop.users[fresh].seen.add(top[0])
    assert top[0] not in shop.popularity_top(fresh, 3)


def test_session_ends_after_its_steps() -> None:
    shop = Shop(ShopConfig(session_steps=(2, 2)))
    user = next(iter(shop.users))
    shop.start_session(user)
    assert not shop.act(user, [], None).session_over
    assert shop.act(user, [], None).session_over
    assert not shop.in_session(user)


def test_hits_rates() -> None:
    shop = Shop(ShopConfig(seed=2))
    hits = Hits()
    assert hits.hr_streamrec == 0.0
    user = next(iter(shop.users))
    shop.start_session(user)
    step = shop.act(user, shop.items, "r")
    hits.add(step)
    assert hits.targets == 1 and hits.streamrec == int(step.hit)


@pytest.mark.parametrize(
    "kwargs",
    [{"items": 5, "categories": 3}, {"users": 0}, {"k": 0}, {"session_steps": (3, 1)}],
)
def test_bad_config_is_a_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ShopConfig(**kwargs)  # type: ignore[arg-type]


def test_summary_lines_carry_the_figures() -> None:
    summary = Summary(prefix="demo-x", rate=100.0, elapsed_s=10.0, produced=1000, requests=10)
    summary.latencies_ms.extend([1.0, 2.0, 50.0])
    summary.freshness_s.extend([0.1, 0.2])
    text = "\n".join(summary.lines())
    assert "outcomes produced" in text and "100.0/s" in text
    assert "latency p99" in text and "50.0 ms" in text
    assert "HR@10 streamrec" in text and "HR@10 popularity" in text
    assert percentile([], 99) != percentile([], 99)  # NaN when empty
