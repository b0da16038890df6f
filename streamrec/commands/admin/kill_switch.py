"""``streamrec admin kill-switch on|off [--tenant T] [--surface S] --reason TEXT`` (and ``status``).

``on``: every server answers the scope (empty tenant / surface = all) from the safe baseline
(segment, then global popularity; rules still applied) within 2 s, with fallback stage
``kill_switch``; ``off`` ends it (an ``off`` for a scope that is not on is an error). Both are
audited with the principal of the token; they need an operator. ``status`` lists the switches
that are on (viewer). Prints the switches on after the change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from core.errors import ConfigError
from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import call
from streamrec.commands.admin.render import AsJson, as_dict, echo_json

__all__ = ["Action", "kill_switch", "render"]


class Action(StrEnum):
    ON = "on"
    OFF = "off"
    STATUS = "status"


def render(response: pb.KillSwitchResponse) -> str:
    """One line per switch that is on, or a line saying none is."""
    if not response.active:
        return "kill switch: off everywhere"
    return "\n".join(
        f"kill switch ON  tenant={s.tenant or '*'} surface={s.surface or '*'}  since {s.since} "
        f"by {s.who}: {s.reason}"
        for s in response.active
    )


def kill_switch(
    action: Annotated[Action, typer.Argument(help="on | off | status")],
    tenant: Annotated[
        str, typer.Option("--tenant", help="Tenant to cover (default: every tenant).")
    ] = "",
    surface: Annotated[
        str, typer.Option("--surface", help="Surface to cover (default: every surface).")
    ] = "",
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why (required for on / off; recorded in the audit)."),
    ] = None,
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Answer a scope from the safe baseline (on), end it (off), or list what is on."""
    if action is Action.STATUS:
        if tenant or surface or reason:
            raise ConfigError("kill-switch status takes no --tenant, --surface or --reason")
        response = call("GetKillSwitch", pb.GetKillSwitchRequest())
    else:
        if reason is None or not reason.strip():
            raise ConfigError(f"kill-switch {action} needs --reason TEXT")
        response = call(
            "SetKillSwitch",
            pb.SetKillSwitchRequest(
                on=action is Action.ON, tenant=tenant, surface=surface, reason=reason
            ),
        )
    if as_json:
        echo_json([as_dict(s) for s in response.active])
        return
    typer.echo(render(response))
