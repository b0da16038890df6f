"""Rule contract (schemas.rules.Rule): shapes, validity windows, scope, JSON round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.rules import AuditEntry, Rule

T0 = 1_700_000_000.0


def make(**kw: Any) -> Rule:
    return Rule.model_validate({"id": "r1", **kw})


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "pin", "item_id": "i", "position": 1},
        {"kind": "boost", "item_id": "i", "factor": 2.5},
        {"kind": "boost", "category": "c", "factor": 0.5},
        {"kind": "block", "item_id": "i"},
        {"kind": "block", "category": "c", "tenant": "t", "surface": "s"},
    ],
)
def test_valid_shapes(fields: dict[str, Any]) -> None:
    rule = make(**fields)
    assert Rule.model_validate_json(rule.model_dump_json()) == rule


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "pin", "item_id": "i"}, "position"),
        ({"kind": "pin", "category": "c", "position": 1}, "item_id"),
        ({"kind": "pin", "item_id": "i", "position": 0}, "position"),
        ({"kind": "pin", "item_id": "i", "position": 101}, "position"),
        ({"kind": "pin", "item_id": "i", "position": 1, "factor": 2}, "factor"),
        ({"kind": "boost", "item_id": "i"}, "factor"),
        ({"kind": "boost", "item_id": "i", "factor": 0}, "factor"),
        ({"kind": "boost", "item_id": "i", "factor": float("inf")}, "factor"),
        ({"kind": "boost", "item_id": "i", "category": "c", "factor": 2}, "exactly one"),
        ({"kind": "block"}, "exactly one"),
        ({"kind": "block", "item_id": "i", "position": 2}, "position"),
        ({"kind": "block", "item_id": "i", "factor": 2}, "factor"),
        ({"kind": "hide", "item_id": "i"}, "kind"),
        ({"kind": "block", "item_id": ""}, "item_id"),
        ({"kind": "block", "item_id": "x" * 129}, "item_id"),
        ({"kind": "block", "item_id": "i", "valid_from": T0, "valid_until": T0}, "after"),
        ({"kind": "block", "item_id": "i", "valid_from": "yesterday"}, "RFC 3339"),
        ({"kind": "block", "item_id": "i", "colour": "red"}, "colour"),
    ],
)
def test_invalid_shapes_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(**fields)


def test_validity_window_is_half_open() -> None:
    rule = make(kind="block", item_id="i", valid_from=T0, valid_until=T0 + 10)
    assert not rule.active_at(T0 - 0.001)
    assert rule.active_at(T0)
    assert rule.active_at(T0 + 9.999)
    assert not rule.active_at(T0 + 10)
    assert rule.expired_at(T0 + 10)
    assert not rule.expired_at(T0 + 5)


def test_rfc3339_and_epoch_bounds_are_equivalent() -> None:
    text = datetime.fromtimestamp(T0, UTC).isoformat().replace("+00:00", "Z")
    a = make(kind="block", item_id="i", valid_until=text)
    b = make(kind="block", item_id="i", valid_until=T0)
    assert a == b
    assert '"valid_until":"2023-11-14T22:13:20Z"' in a.model_dump_json()


def test_unbounded_rule_is_always_active() -> None:
    rule = make(kind="block", item_id="i")
    assert rule.active_at(0.0)
    assert rule.active_at(T0 * 3)


def test_scope_and_matching() -> None:
    rule = make(kind="boost", category="sale", factor=2, tenant="t1")
    assert rule.in_scope("t1", "anything")
    assert not rule.in_scope("t2", "home")
    assert rule.matches("x", ("new", "sale"))
    assert not rule.matches("sale", ())
    pin = make(kind="pin", item_id="p", position=3, surface="pdp")
    assert pin.matches("p")
    assert not pin.matches("q", ("p",))
    assert pin.applies(now=T0, tenant="any", surface="pdp")
    assert not pin.applies(now=T0, tenant="any", surface="home")


def test_audit_entry_round_trip() -> None:
    entry = AuditEntry(ts=T0, who="ops", action="create_rule", target="r1", detail="{}")
    assert entry.when == datetime.fromtimestamp(T0, UTC)
    with pytest.raises(ValidationError):
        AuditEntry.model_validate(
            {"ts": T0, "who": "x", "action": "drop", "target": "", "detail": ""}
        )
