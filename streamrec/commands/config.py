"""``streamrec config``: every setting with its environment variable, value and meaning."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pydantic import SecretStr

from core.config_file import layered_values
from core.settings import ENV_PREFIX, Settings
from core.settings import settings as load


def command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the effective settings (secrets hidden), their STREAMREC_* variables and sources.

    A source is env, file (STREAMREC_CONFIG_FILE), profile NAME (STREAMREC_PROFILE) or default.
    """
    current = load()
    layers = layered_values(Settings.model_fields, init={"config_file": current.config_file})
    rows: list[dict[str, object]] = []
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        shown = "**********" if isinstance(value, SecretStr) else value
        rows.append(
            {
                "env": f"{ENV_PREFIX}{name.upper()}",
                "value": shown if isinstance(shown, int | float | bool | dict) else str(shown),
                "source": layers.source_of(name),
                "description": field.description or "",
            }
        )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(str(r["env"])) for r in rows)
    for row in rows:
        env = str(row["env"])
        source = "" if row["source"] == "default" else f"  ({row['source']})"
        print(f"{env:<{width}}  {row['value']}{source}\n{'':<{width}}  {row['description']}")
