"""``streamrec admin history | diff V1 V2 | rollback V --reason TEXT``.

Versions number every change of the serving config (rules, experiments, run-time settings);
``rollback V`` makes a new version whose documents are those of version V (every kind, or
``--kind``), applied by every server within about a second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import call
from streamrec.commands.admin.render import (
    AsJson,
    Reason,
    as_dict,
    change_line,
    echo_json,
    version_line,
)

__all__ = ["diff", "history", "rollback"]

Kind = Annotated[
    str, typer.Option("--kind", help="rules | experiments | config (default: every kind).")
]


def _kind(value: str) -> str:
    if value not in ("", "rules", "experiments", "config"):
        raise typer.BadParameter(
            f"unknown kind {value!r} (one of rules, experiments, config)", param_hint="--kind"
        )
    return value


def history(
    kind: Kind = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Versions shown.")] = 20,
    changes: Annotated[bool, typer.Option("--changes", help="Show each version's diff.")] = False,
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Versions of the serving config, newest first: who changed what, when, why."""
    listed = call("ListVersions", pb.ListVersionsRequest(kind=_kind(kind), limit=limit))
    if as_json:
        echo_json({"current": listed.current, "versions": [as_dict(v) for v in listed.versions]})
        return
    if not listed.versions:
        typer.echo("no versions yet (the first admin change makes versions 1 and 2)")
    for version in listed.versions:
        typer.echo(version_line(version))
        if changes:
            for change in version.diff:
                typer.echo(f"      {change_line(change)}")


def diff(
    v1: Annotated[int, typer.Argument(metavar="V1", min=1, help="Older version.")],
    v2: Annotated[int, typer.Argument(metavar="V2", min=1, help="Newer version.")],
    kind: Kind = "",
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """What differs between the documents of two versions (path: old -> new)."""
    request = pb.DiffVersionsRequest(from_version=v1, to_version=v2, kind=_kind(kind))
    changes = call("DiffVersions", request).changes
    if as_json:
        echo_json([as_dict(c) for c in changes])
        return
    for change in changes:
        typer.echo(change_line(change))
    if not changes:
        typer.echo(f"v{v1} and v{v2} are the same")


def rollback(
    version: Annotated[int, typer.Argument(metavar="V", min=1, help="Version to go back to.")],
    reason: Annotated[str, Reason],
    kind: Kind = "",
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Restore the documents of version V as a new, audited version (every server, ~1 s)."""
    if not reason.strip():
        raise typer.BadParameter("must not be empty", param_hint="--reason")
    made = call("Rollback", pb.RollbackRequest(version=version, reason=reason, kind=_kind(kind)))
    if as_json:
        echo_json(as_dict(made))
        return
    typer.echo(f"rolled back to v{version}: {version_line(made)}")
    for change in made.diff:
        typer.echo(f"      {change_line(change)}")
