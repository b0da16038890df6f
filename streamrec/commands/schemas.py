"""``streamrec schemas``: publish the event contracts as JSON Schema files for producers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.jsonschema import export_json_schemas
from streamrec.errors import ConfigError

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
