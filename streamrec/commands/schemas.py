"""``streamrec schemas``: publish the event contracts as JSON Schema files for producers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from core.errors import ConfigError
from schemas.events import EVENT_MODELS
from schemas.jsonschema import event_json_schema, export_json_schemas

app = typer.Typer(
    help="Event contracts as JSON Schema (draft 2020-12).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("export")
def export(
    directory: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="Directory to write <contract>.json files into (created)."
        ),
    ],
) -> None:
    """Write exposure.v1.json, outcome.v1.json, item.v1.json, alert.v1.json, deadletter.v1.json."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    try:
        paths = export_json_schemas(directory)
    except OSError as exc:
        raise ConfigError(f"cannot write schemas to {directory}: {exc.strerror or exc}") from exc
    for path in paths:
        typer.echo(str(path))


@app.command("show")
def show(
    name: Annotated[
        str, typer.Argument(metavar="CONTRACT", help="outcome.v1, exposure.v1, item.v1, …")
    ],
) -> None:
    """Print the JSON Schema of one contract to stdout."""
    try:
        schema = event_json_schema(name)
    except KeyError:
        known = ", ".join(EVENT_MODELS)
        raise typer.BadParameter(f"unknown contract {name!r} (known: {known})") from None
    typer.echo(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode())
