"""serving.controls: kill-switch scopes, the holdback draw, the poll against a fake Redis."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.controls import KillSwitch, parse_kill_switches, scope_field
from schemas.keyspace import Keyspace
from serving import metrics
from serving.controls import Controls, holdback_position

KEYS = Keyspace("ut")


def switch(tenant: str = "", surface: str = "") -> KillSwitch:
    return KillSwitch(tenant=tenant, surface=surface, reason="r", who="otto", since=1.7e9)


def test_scopes_cover_what_they_name() -> None:
    controls = Controls()
    assert controls.killed("shop", "home") is None
    controls.apply([switch("shop")])
    assert controls.killed("shop", "home") is not None
    assert controls.killed("shop", "pdp") is not None
    assert controls.killed("other", "home") is None
    controls.apply([switch("", "pdp")])
    assert controls.killed("other", "pdp") is not None
    assert controls.killed("other", "home") is None
    controls.apply([switch("shop", "pdp")])
    assert controls.killed("shop", "pdp") is not None
    assert controls.killed("shop", "home") is None
    controls.apply([switch()])
    assert controls.killed("any", "thing") is not None
    assert metrics.KILL_SWITCHES._value.get() == 1.0


def test_scope_fields_cannot_collide() -> None:
    assert scope_field("a|b", "c") != scope_field("a", "b|c")
    assert scope_field('a",', "") != scope_field("a", '",')


def test_holdback_share_is_hash_stable_and_per_tenant() -> None:
    controls = Controls(holdback_share=0.1, holdback_salt="s")
    units = [f"u{i}" for i in range(20_000)]
    held = {u for u in units if controls.in_holdback("shop", u)}
    assert 0.09 < len(held) / len(units) < 0.11
    assert held == {u for u in units if controls.in_holdback("shop", u)}  # stable
    other = {u for u in units if controls.in_holdback("other", u)}
    assert 0.05 < len(held & other) / len(held) < 0.2  # independent draws (≈ 10 %)
    assert not any(Controls(holdback_share=0.0).in_holdback("shop", u) for u in units[:100])
    assert holdback_position("s", "shop", "u1") == holdback_position("s", "shop", "u1")
    with pytest.raises(ValueError, match="holdback_share"):
        Controls(holdback_share=1.5)


async def test_refresh_reads_the_switches_and_keeps_them_when_redis_fails() -> None:
    redis = fakeredis.FakeAsyncRedis()
    controls = Controls(redis, KEYS, poll_s=0.05)
    assert await controls.refresh()
    assert not controls.switches
    on = switch("shop")
    await redis.hset(KEYS.kill_switch, on.field, on.model_dump_json())
    await redis.hset(KEYS.kill_switch, "junk", "not json")
    assert await controls.refresh()
    assert [sw.tenant for sw in controls.switches] == ["shop"]

    async def broken(_key: str) -> None:
        raise RedisConnectionError("down")

    redis.hgetall = broken  # type: ignore[method-assign,assignment]
    assert not await controls.refresh()
    assert [sw.tenant for sw in controls.switches] == ["shop"]  # a switch that is on stays on
    await redis.aclose()


async def test_start_polls_and_stop_is_idempotent() -> None:
    redis = fakeredis.FakeAsyncRedis()
    controls = Controls(redis, KEYS, poll_s=0.01)
    await controls.start()
    on = switch()
    await redis.hset(KEYS.kill_switch, on.field, on.model_dump_json())
    for _ in range(200):
        if controls.switches:
            break
        await asyncio.sleep(0.01)
    assert controls.killed("t", "s") is not None
    await controls.stop()
    await controls.stop()
    await redis.aclose()


def test_parse_skips_unreadable_entries() -> None:
    good = switch("a")
    parsed = parse_kill_switches({b"x": good.model_dump_json().encode(), b"y": b"{}"})
    assert parsed == [good]
