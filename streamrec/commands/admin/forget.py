"""``streamrec admin forget USER``: erase one user (or session) id from Redis.

Deletes every per-user key (recent items, seen items, affinities, activity, the session list of
that id, its decision traces) and removes the id from every session-neighbour index; the audit
trail records the erasure (who, when, a digest of the id and the counts), not its content.
Needs an admin. Events already on Kafka topics are not touched (see docs/controls.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

from core.errors import ConfigError
from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import AdminClient, target
from streamrec.commands.admin.render import AsJson, as_dict, echo_json

__all__ = ["FORGET_TIMEOUT_S", "forget"]

#: The sweep of the session-neighbour indexes is a SCAN of all of them: give it time.
FORGET_TIMEOUT_S = 120.0


def forget(
    user: Annotated[str, typer.Argument(metavar="USER", help="User (or session) id.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask for confirmation (scripts).")
    ] = False,
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Delete every key of USER in Redis (audited without its content)."""
    if not user.strip():
        raise ConfigError("USER must not be empty")
    if not yes and not typer.confirm(f"erase everything streamrec keeps about {user!r}?"):
        raise ConfigError("not confirmed: nothing erased")
    where = target()
    client = AdminClient(
        type(where)(where.addr, where.token, max(where.timeout_s, FORGET_TIMEOUT_S))
    )
    done = client.call("Forget", pb.ForgetRequest(user_id=user))
    if as_json:
        echo_json(as_dict(done))
        return
    typer.echo(
        f"forgot {user}: {done.keys_deleted} keys deleted, "
        f"{done.entries_removed} index entries removed (audited)"
    )
