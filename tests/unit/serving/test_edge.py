"""Edge admission (serving.edge, rate_limit, api_keys): pure, with a fake clock."""

from __future__ import annotations

import pytest

from core.settings import load_settings
from serving.api_keys import ApiKeys, hash_key
from serving.edge import EdgePolicy, RefusalReason, Scope, caller_of_peer
from serving.rate_limit import CallerLimiter, InFlight, TokenBucket


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.5)
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped


def test_callers_have_their_own_buckets_and_idle_ones_are_forgotten() -> None:
    limiter = CallerLimiter(1.0, 1, max_callers=2)
    assert limiter.allow("a", 0.0) is None
    assert limiter.allow("a", 0.0) == pytest.approx(1.0)
    assert limiter.allow("b", 0.0) is None
    assert limiter.allow("c", 0.0) is None  # a forgotten (least recent)
    assert len(limiter) == 2
    assert limiter.allow("a", 0.0) is None  # back with a full bucket


def test_in_flight_refuses_past_its_limit() -> None:
    cap = InFlight(2)
    assert cap.enter() and cap.enter() and not cap.enter()
    cap.leave()
    assert cap.enter()
    unlimited = InFlight(0)
    assert all(unlimited.enter() for _ in range(1000))


def test_api_keys_match_their_hash_only() -> None:
    keys = ApiKeys.from_entries([f"web:{hash_key('s3cret')}"])
    assert keys.required
    assert keys.caller("s3cret") == "web"
    assert keys.caller("S3cret") is None and keys.caller(None) is None and keys.caller("") is None
    assert not ApiKeys().required


@pytest.mark.parametrize(
    ("peer", "caller"),
    [
        ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:51234", "ipv6:[::1]"),
        ("unix:/tmp/s", "unix:/tmp/s"),
        (None, "unknown"),
    ],
)
def test_the_caller_of_a_peer_has_no_port(peer: str | None, caller: str) -> None:
    assert caller_of_peer(peer) == caller


def _policy(**kw: object) -> EdgePolicy:
    return EdgePolicy.from_settings(load_settings(**kw))


def test_default_settings_turn_every_check_off() -> None:
    policy = _policy()
    assert not policy.active
    assert policy.admit(Scope.KEYED, (), "ipv4:1.2.3.4:5", 0.0) is None


def test_keys_then_rate_then_in_flight() -> None:
    policy = _policy(
        serving_api_keys=[f"web:{hash_key('k1')}"],
        serving_rate_limit_per_s=1.0,
        serving_rate_limit_burst=1,
        serving_max_in_flight=1,
    )
    assert policy.active
    md = (("x-api-key", "k1"),)
    unknown = policy.admit(Scope.KEYED, (("x-api-key", "k2"),), "ipv4:1.2.3.4:5", 0.0)
    assert unknown is not None and unknown.reason is RefusalReason.UNAUTHENTICATED
    assert policy.in_flight.current == 0  # refused calls hold no place
    assert policy.admit(Scope.KEYED, md, "ipv4:1.2.3.4:5", 0.0) is None
    limited = policy.admit(Scope.KEYED, md, "ipv4:9.9.9.9:5", 0.1)  # same key, other address
    assert limited is not None and limited.reason is RefusalReason.RATE_LIMITED
    assert "key:web" in limited.message
    busy = policy.admit(Scope.CAPPED, (), "ipv4:1.2.3.4:5", 0.1)  # Admin: no key, cap only
    assert busy is not None and busy.reason is RefusalReason.OVERLOADED
    assert policy.admit(Scope.OPEN, (), None, 0.1) is None  # health: never refused
    policy.release(Scope.KEYED)
    assert policy.admit(Scope.CAPPED, (), "ipv4:1.2.3.4:5", 0.1) is None


def test_callers_without_keys_are_told_apart_by_address() -> None:
    policy = _policy(serving_rate_limit_per_s=1.0, serving_rate_limit_burst=1)
    assert policy.admit(Scope.KEYED, (), "ipv4:1.1.1.1:1000", 0.0) is None
    policy.release(Scope.KEYED)
    again = policy.admit(Scope.KEYED, (), "ipv4:1.1.1.1:2000", 0.0)  # reconnected: same bucket
    assert again is not None and again.reason is RefusalReason.RATE_LIMITED
    assert policy.admit(Scope.KEYED, (), "ipv4:2.2.2.2:1000", 0.0) is None
