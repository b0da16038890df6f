"""``streamrec admin config show | set KEY=VALUE… | unset KEY… | apply FILE`` (run-time settings).

The ``ranker_*`` settings may change while servers run: a change is a new config version
(``--reason`` required) that every server applies within about a second; ``rollback`` undoes
it. ``apply`` takes a TOML settings file such as the one ``streamrec eval tune --output``
writes; keys that only take effect at start (worker settings such as ``covis_window``) are
refused unless ``--skip-static`` (then listed as skipped: set them in the workers'
``STREAMREC_CONFIG_FILE`` and restart them).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from core.config_file import PROFILE_KEY
from core.errors import ConfigError
from core.settings import Settings
from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import call
from streamrec.commands.admin.render import AsJson, Reason, as_dict, change_line, echo_json

__all__ = ["app", "parse_assignment", "split_file_settings"]

app = typer.Typer(
    help="Run-time settings (ranker_*) of every server, versioned.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def parse_assignment(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → (key, JSON value); VALUE is JSON when it parses, else a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="KEY=VALUE")
    try:
        json.loads(value)
        return key, value.strip()
    except ValueError:
        return key, json.dumps(value)


def split_file_settings(
    values: dict[str, Any], runtime: set[str]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """A settings file's values → (run-time ones, static settings, unknown keys)."""
    live = {k: v for k, v in values.items() if k in runtime}
    static = sorted(
        k for k in values if k not in runtime and (k in Settings.model_fields or k == PROFILE_KEY)
    )
    unknown = sorted(k for k in values if k not in runtime and k not in static)
    return live, static, unknown


def _report(made: pb.ConfigVersionInfo, as_json: bool) -> None:
    if as_json:
        echo_json(as_dict(made))
        return
    typer.echo(f"v{made.version}: {made.action} by {made.author}")
    for change in made.diff:
        typer.echo(f"      {change_line(change)}")


def _reason(reason: str) -> str:
    if not reason.strip():
        raise typer.BadParameter("must not be empty", param_hint="--reason")
    return reason


@app.command()
def show(as_json: Annotated[bool, AsJson] = False) -> None:
    """The overrides in force, the effective ranker settings and the run-time settings."""
    got = call("GetConfig", pb.GetConfigRequest())
    doc = {
        "version": got.version,
        "overrides": json.loads(got.overrides_json or "{}"),
        "effective": json.loads(got.effective_json or "{}"),
        "runtime_settings": list(got.runtime_settings),
    }
    if as_json:
        echo_json(doc)
        return
    typer.echo(f"config version v{got.version}; overrides:")
    for name, value in sorted(doc["overrides"].items()):
        typer.echo(f"  {name} = {json.dumps(value)}")
    if not doc["overrides"]:
        typer.echo("  (none: every server uses its own settings)")
    typer.echo("run-time settings: " + ", ".join(doc["runtime_settings"]))


@app.command("set")
def set_(
    assignments: Annotated[
        list[str], typer.Argument(metavar="KEY=VALUE...", help="e.g. ranker_max_anchors=5")
    ],
    reason: Annotated[str, Reason],
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Override run-time settings on every server (a new version)."""
    values = dict(parse_assignment(a) for a in assignments)
    request = pb.SetConfigRequest(values_json=values, reason=_reason(reason))
    _report(call("SetConfig", request), as_json)


@app.command()
def unset(
    keys: Annotated[list[str], typer.Argument(metavar="KEY...", help="Overrides to remove.")],
    reason: Annotated[str, Reason],
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Remove overrides (servers go back to their own settings)."""
    request = pb.SetConfigRequest(unset=keys, reason=_reason(reason))
    _report(call("SetConfig", request), as_json)


@app.command()
def apply(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="TOML settings file.")],
    reason: Annotated[str, Reason],
    skip_static: Annotated[
        bool,
        typer.Option("--skip-static", help="Apply the run-time keys, list the others as skipped."),
    ] = False,
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Apply a settings file (e.g. from `streamrec eval tune --output`) as one new version."""
    _reason(reason)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not TOML: {exc}") from exc
    runtime = set(call("GetConfig", pb.GetConfigRequest()).runtime_settings)
    live, static, unknown = split_file_settings(values, runtime)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    if static and not skip_static:
        raise ConfigError(
            f"{path}: not changeable at run time: {', '.join(static)} (set them in the "
            "workers' STREAMREC_CONFIG_FILE and restart, or pass --skip-static)"
        )
    if not live:
        raise ConfigError(f"{path}: no run-time setting in it ({', '.join(sorted(runtime))})")
    request = pb.SetConfigRequest(
        values_json={k: json.dumps(v) for k, v in live.items()}, reason=reason
    )
    _report(call("SetConfig", request), as_json)
    if static and not as_json:
        typer.echo(f"skipped (static, need a restart): {', '.join(static)}")
