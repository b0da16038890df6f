"""``streamrec admin principals add NAME --role R | list | revoke NAME``.

``add`` prints the new token once (it is stored only as its SHA-256): give it to the
principal, who uses it as ``STREAMREC_ADMIN_TOKEN``. Needs an admin token.
"""

from __future__ import annotations

from typing import Annotated

import typer

from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import call
from streamrec.commands.admin.render import AsJson, as_dict, echo_json

__all__ = ["app"]

app = typer.Typer(
    help="Principals (named tokens with a role).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _line(p: pb.PrincipalInfo) -> str:
    state = f"revoked {p.revoked_at} by {p.revoked_by}" if p.revoked_at else "active"
    return f"{p.name:<24} {p.role:<9} {state}  (added {p.created_at} by {p.created_by})"


@app.command()
def add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="1-64 of A-Z a-z 0-9 . _ @ -")],
    role: Annotated[str, typer.Option("--role", help="viewer | operator | admin")],
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Add a principal; prints its token once."""
    added = call("AddPrincipal", pb.AddPrincipalRequest(name=name, role=role))
    if as_json:
        echo_json({"principal": as_dict(added.principal), "token": added.token})
        return
    typer.echo(f"added {added.principal.name} ({added.principal.role}); its token (shown once):")
    typer.echo(added.token)


@app.command("list")
def list_(as_json: Annotated[bool, AsJson] = False) -> None:
    """Every principal, revoked ones included (never their tokens)."""
    listed = call("ListPrincipals", pb.ListPrincipalsRequest())
    if as_json:
        echo_json([as_dict(p) for p in listed.principals])
        return
    for principal in listed.principals:
        typer.echo(_line(principal))
    if not listed.principals:
        typer.echo("no principals (only the bootstrap admin, STREAMREC_ADMIN_TOKEN)")


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(metavar="NAME")],
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Revoke a principal: its token is refused from now on."""
    revoked = call("RevokePrincipal", pb.RevokePrincipalRequest(name=name))
    if as_json:
        echo_json(as_dict(revoked))
        return
    typer.echo(f"revoked {revoked.name} ({revoked.role}) at {revoked.revoked_at}")
