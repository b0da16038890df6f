"""streamrec admin kill-switch / explain / forget: argument errors and rendering (no server)."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from schemas import recommender_pb2 as pb
from streamrec.commands.admin import explain, forget, kill_switch


def test_kill_switch_needs_a_reason_and_status_takes_no_scope() -> None:
    with pytest.raises(ConfigError, match="needs --reason"):
        kill_switch.kill_switch(kill_switch.Action.ON, reason=None)
    with pytest.raises(ConfigError, match="needs --reason"):
        kill_switch.kill_switch(kill_switch.Action.OFF, reason="  ")
    with pytest.raises(ConfigError, match="takes no"):
        kill_switch.kill_switch(kill_switch.Action.STATUS, tenant="shop")


def test_forget_refuses_an_empty_user() -> None:
    with pytest.raises(ConfigError, match="must not be empty"):
        forget.forget(" ", yes=True)


def test_renderings() -> None:
    assert kill_switch.render(pb.KillSwitchResponse()) == "kill switch: off everywhere"
    on = pb.KillSwitchResponse(
        active=[pb.KillSwitch(tenant="shop", reason="r", who="otto", since="2026-01-01T00:00Z")]
    )
    assert "tenant=shop surface=*" in kill_switch.render(on) and "by otto: r" in (
        kill_switch.render(on)
    )
    trace = pb.ExplainResponse(
        request_id="r1",
        user_id="u1",
        method="Recommend",
        variant="control",
        stage="kill_switch",
        items=[pb.TracedItem(item_id="z", rank=1, score=2.0, reasons=["pinned"], rules=["p"])],
        rules=["p"],
        flags=["degraded"],
    )
    text = explain.render(trace)
    assert "user u1" in text and "stage kill_switch" in text and "flags degraded" in text
    assert "1. z" in text and "[rules p]" in text
    assert "(no items were served)" in explain.render(pb.ExplainResponse(request_id="r2"))
