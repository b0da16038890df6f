"""Rule hits, answer flags, exposure events and decision traces of one answer (pure)."""

from __future__ import annotations

from schemas.controls import EXTRA_EMPTY, EXTRA_ERROR, AnswerError
from schemas.events import Context
from schemas.rules import Rule
from serving.decisions import answer_flags, rule_hits
from serving.exposure_log import PendingExposure, build_exposure
from serving.traces import build_trace

NOW = 1_700_000_000.0
CTX = Context(tenant="shop", surface="home", extra={"device": "web"})
RULES = (
    Rule(id="pin-z", kind="pin", item_id="z", position=1),
    Rule(id="boost-shoes", kind="boost", category="shoes", factor=2.0),
    Rule(id="block-c", kind="block", item_id="c"),
    Rule(id="elsewhere", kind="boost", item_id="b", factor=2.0, tenant="other"),
)
CATS = {"b": ("shoes",), "d": ("hats",)}


def pending(**kw: object) -> PendingExposure:
    fields: dict[str, object] = {
        "request_id": "r1",
        "user_id": "u1",
        "session_id": None,
        "ts": NOW,
        "items": [("z", 3.0), ("b", 2.0), ("d", 1.0)],
        "context": CTX,
        "variant": "control",
        "algo_version": "covis-v1",
        "latency_ms": 1.5,
        "stage": "none",
        "degraded": False,
        "reasons": [("pinned by rule pin-z",), ("co-viewed with a",), ("popular",)],
        "rules": RULES,
        "categories": CATS,
    }
    fields.update(kw)
    return PendingExposure(**fields)  # type: ignore[arg-type]


def test_rule_hits_name_pins_and_boosts_per_item_and_every_active_rule() -> None:
    per_item, active = rule_hits(
        ["z", "b", "d"], RULES, CATS, now=NOW, tenant="shop", surface="home"
    )
    assert per_item == [["pin-z"], ["boost-shoes"], []]
    assert active == ["pin-z", "boost-shoes", "block-c"]  # out-of-scope rule left out


def test_flags_follow_the_contract() -> None:
    assert answer_flags(items=3, degraded=False, error="") == {}
    assert answer_flags(items=3, degraded=True, error="") == {
        "degraded": "1",
        EXTRA_ERROR: AnswerError.STATE_UNAVAILABLE.value,
    }
    assert answer_flags(items=0, degraded=False, error="no_state") == {
        EXTRA_ERROR: "no_state",
        EXTRA_EMPTY: "1",
    }


def test_exposure_carries_reasons_rules_and_flags() -> None:
    event = build_exposure(pending())
    assert [i.reasons for i in event.items] == [
        ["pinned by rule pin-z"],
        ["co-viewed with a"],
        ["popular"],
    ]
    assert [i.rules for i in event.items] == [["pin-z"], ["boost-shoes"], None]
    assert event.context.extra == {"device": "web", "fallback_stage": "none"}
    failed = build_exposure(pending(items=[], reasons=[], error="internal"))
    assert failed.items == []
    assert failed.context.extra["error"] == "internal"
    assert failed.context.extra["empty"] == "1"


def test_trace_holds_what_was_served_to_whom_and_why() -> None:
    trace = build_trace(pending(session_id=None, degraded=True))
    assert (trace.request_id, trace.user_id, trace.variant, trace.stage) == (
        "r1",
        "u1",
        "control",
        "none",
    )
    assert [(i.item_id, i.rank, i.rules) for i in trace.items] == [
        ("z", 1, ["pin-z"]),
        ("b", 2, ["boost-shoes"]),
        ("d", 3, []),
    ]
    assert trace.items[1].reasons == ["co-viewed with a"]
    assert trace.rules == ["pin-z", "boost-shoes", "block-c"]
    assert trace.flags == ["degraded", "error"]
    session = build_trace(pending(user_id=None, session_id="s9"))
    assert session.user_id == "s9"
