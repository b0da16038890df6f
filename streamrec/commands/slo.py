"""``streamrec slo``: the SLO rules of the effective settings, and the remaining error budgets.

``streamrec slo rules`` prints the Prometheus rule groups of the SLOs (recording rules, the
fast- and slow-burn alerts, the 30-day budgets) built from the ``STREAMREC_SLO_*`` settings;
``--write FILE`` replaces the generated section of a rule file (``deploy/prometheus/alerts.yml``)
instead. ``streamrec slo budget`` prints what ``streamrec status`` shows of the budgets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from core.errors import ConfigError
from core.settings import settings as load
from monitoring.slo import Objectives, read_error_budget, render_groups, replace_generated
from monitoring.status_report import budget_lines

app = typer.Typer(
    help="SLOs: the burn-rate rules of the settings' objectives, the remaining budgets.",
    no_args_is_help=True,
)


def _objectives() -> Objectives:
    try:
        return Objectives.from_settings(load())
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@app.command("rules")
def rules(
    write: Annotated[
        Path | None,
        typer.Option(
            "--write", help="Replace the generated SLO section of this rule file (or append it)."
        ),
    ] = None,
) -> None:
    """Print (or write) the SLO rule groups built from the STREAMREC_SLO_* settings."""
    section = render_groups(_objectives())
    if write is None:
        print("groups:")
        print(section, end="")
        return
    try:
        text = write.read_text(encoding="utf-8")
        write.write_text(replace_generated(text, section), encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot update {write}: {exc}") from exc
    print(f"wrote the SLO rules into {write}")


@app.command("budget")
def budget() -> None:
    """The remaining error budgets, read from STREAMREC_PROMETHEUS_URL; exit 1 when unknown."""
    reading = asyncio.run(read_error_budget(load()))
    lines = budget_lines(reading)
    for line in lines:
        print(line.render())
    raise typer.Exit(1 if reading.error or not reading.rows else 0)
