"""``streamrec admin experiments create|start|pause|resume|stop|promote|list``.

Lifecycle: draft → running → paused → stopped / promoted. ``pause`` (an operator may) gives
everyone the control arm within about a second; ``stop`` returns to the server's default;
``promote`` gives everyone one arm and is refused unless ``eval ab`` on the experiment's own
logs says *ship* with at least 30 users in every arm — or ``--force --reason`` (audited).
``promote`` runs that analysis here: ``--exposures`` / ``--outcomes`` are the exported topics
(``streamrec export``); only the exposures of the experiment's arms served since it started,
and the outcomes of those requests, are analysed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from core.errors import ConfigError
from evaluation import AbConfig, Metric, read_logs
from evaluation.logs import Logs
from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import call
from streamrec.commands.admin.render import AsJson, as_dict, echo_json

__all__ = ["Evidence", "app", "experiment_logs", "judge"]

app = typer.Typer(
    help="Experiments and their lifecycle (draft, running, paused, stopped, promoted).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="Experiment name.")]
OptionalReason = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit).")]


def _line(e: pb.ExperimentInfo) -> str:
    arms = ", ".join(
        f"{v['name']} {v['share']:g}" for v in json.loads(e.config_json or "{}").get("variants", [])
    )
    config = json.loads(e.config_json or "{}")
    extra = f" -> {e.promoted_variant} ({e.decision})" if e.status == "promoted" else ""
    if config.get("allocation") == "bandit":
        extra += f" bandit (min share {config.get('min_share', 0):g})"
    return f"{e.name:<24} {e.status:<9} [{arms}] control {e.control}{extra}"


def _show(info: pb.ExperimentInfo, as_json: bool) -> None:
    if as_json:
        echo_json(as_dict(info))
    else:
        typer.echo(f"v{info.version}: {_line(info)}")


@app.command("list")
def list_(as_json: Annotated[bool, AsJson] = False) -> None:
    """Every experiment with its status."""
    listed = call("ListExperiments", pb.ListExperimentsRequest()).experiments
    if as_json:
        echo_json([as_dict(e) for e in listed])
        return
    for info in listed:
        typer.echo(_line(info))
    if not listed:
        typer.echo("no experiments")


@app.command()
def create(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="ExperimentConfig JSON file.")],
    reason: OptionalReason = "",
    allocation: Annotated[
        Allocation | None,
        typer.Option(
            "--allocation",
            help="fixed: hashed split by the variants' shares; bandit: Thompson sampling over "
            "the variants' CTR, sticky per user (overrides the file's 'allocation').",
        ),
    ] = None,
    min_share: Annotated[
        float | None,
        typer.Option(
            "--min-share",
            help="Bandit: least share of new users each arm keeps (overrides the file's "
            "'min_share'; default 0.1).",
        ),
    ] = None,
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """Create an experiment (draft) from an ExperimentConfig JSON file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if allocation is not None or min_share is not None:
        text = _with_allocation(path, text, allocation, min_share)
    request = pb.CreateExperimentRequest(config_json=text, reason=reason)
    _show(call("CreateExperiment", request), as_json)


class Allocation(StrEnum):
    fixed = "fixed"
    bandit = "bandit"


def _with_allocation(
    path: Path, text: str, allocation: Allocation | None, min_share: float | None
) -> str:
    """The config JSON with ``allocation`` / ``min_share`` set (the server validates them)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: an ExperimentConfig JSON object is expected")
    if allocation is not None:
        doc["allocation"] = allocation.value
    if min_share is not None:
        doc["min_share"] = min_share
    return json.dumps(doc)


def _change(method: str, name: str, reason: str, as_json: bool) -> None:
    _show(call(method, pb.ChangeExperimentRequest(name=name, reason=reason)), as_json)


@app.command()
def start(
    name: Name, reason: OptionalReason = "", as_json: Annotated[bool, AsJson] = False
) -> None:
    """draft → running."""
    _change("StartExperiment", name, reason, as_json)


@app.command()
def pause(
    name: Name, reason: OptionalReason = "", as_json: Annotated[bool, AsJson] = False
) -> None:
    """running → paused: everyone gets the control arm (operators may)."""
    _change("PauseExperiment", name, reason, as_json)


@app.command()
def resume(
    name: Name, reason: OptionalReason = "", as_json: Annotated[bool, AsJson] = False
) -> None:
    """paused → running."""
    _change("ResumeExperiment", name, reason, as_json)


@app.command()
def stop(name: Name, reason: OptionalReason = "", as_json: Annotated[bool, AsJson] = False) -> None:
    """→ stopped: the server's default experiment again (final)."""
    _change("StopExperiment", name, reason, as_json)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What ``eval ab`` says about one experiment, as sent with a promotion."""

    decision: str
    winner: str
    users_per_arm: dict[str, int]
    report: dict[str, Any]


def experiment_logs(logs: Logs, arms: set[str], since: float | None) -> Logs:
    """The exposures of ``arms`` served at or after ``since``, and the outcomes of them."""
    exposures = [
        e
        for e in logs.exposures
        if e.variant in arms and (since is None or e.ts.timestamp() >= since)
    ]
    requests = {e.request_id for e in exposures}
    outcomes = [o for o in logs.outcomes if o.request_id in requests]
    return replace(logs, exposures=exposures, outcomes=outcomes)


def judge(info: pb.ExperimentInfo, logs: Logs, metric: Metric, mde: float = 0.05) -> Evidence:
    """``eval ab`` on the experiment's own logs: decision, winner, users per arm."""
    from evaluation.ab import analyze  # statsmodels: imported only when analysing

    config = json.loads(info.config_json)
    shares = {v["name"]: float(v["share"]) for v in config["variants"] if v["share"] > 0}
    since = datetime.fromisoformat(info.started_at).timestamp() if info.started_at else None
    own = experiment_logs(logs, set(shares), since)
    result = analyze(
        own,
        AbConfig(
            metric=metric,
            mde=mde,
            control=info.control,
            expected_split=shares,
            prefer_holdback=False,
        ),
    )
    users = {v.name: v.users for v in result.variants}
    report = {
        "decision": str(result.decision),
        "winner": result.winner,
        "reasons": list(result.reasons),
        "variants": {
            v.name: {"users": v.users, "requests": v.requests, "value": v.value}
            for v in result.variants
        },
        "exposures": len(own.exposures),
        "outcomes": len(own.outcomes),
    }
    return Evidence(str(result.decision), result.winner or "", users, report)


@app.command()
def promote(
    name: Name,
    exposures: Annotated[
        Path | None,
        typer.Option("--exposures", help="exposure.v1 JSON lines (streamrec export)."),
    ] = None,
    outcomes: Annotated[
        Path | None, typer.Option("--outcomes", help="outcome.v1 JSON lines (streamrec export).")
    ] = None,
    variant: Annotated[
        str, typer.Option("--variant", help="Arm everyone gets (default: the winner).")
    ] = "",
    metric: Annotated[
        Metric, typer.Option("--metric", help="ctr | conversion | revenue (per request).")
    ] = Metric.CTR,
    mde: Annotated[
        float, typer.Option("--mde", help="Relative minimum detectable effect (as eval ab).")
    ] = 0.05,
    force: Annotated[
        bool, typer.Option("--force", help="Promote whatever the analysis says (needs --reason).")
    ] = False,
    reason: OptionalReason = "",
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """running | paused → promoted, if `eval ab` on its own logs says ship (or --force)."""
    if force and not reason.strip():
        raise typer.BadParameter("--force needs a reason", param_hint="--reason")
    if (exposures is None) != (outcomes is None):
        raise typer.BadParameter("give both --exposures and --outcomes", param_hint="--exposures")
    if exposures is None and not force:
        raise typer.BadParameter(
            "promotion needs the experiment's logs (--exposures, --outcomes) or --force",
            param_hint="--exposures",
        )
    evidence = Evidence("", "", {}, {})
    if exposures is not None and outcomes is not None:
        listed = call("ListExperiments", pb.ListExperimentsRequest()).experiments
        info = next((e for e in listed if e.name == name), None)
        if info is None:
            raise ConfigError(f"no experiment {name!r}")
        evidence = judge(info, read_logs(exposures, outcomes), metric, mde)
        if not as_json:
            typer.echo(
                f"eval ab on {name}'s own logs: {evidence.decision}"
                + (f" ({evidence.winner})" if evidence.winner else "")
                + ", users per arm "
                + ", ".join(f"{k} {n}" for k, n in sorted(evidence.users_per_arm.items()))
            )
    request = pb.PromoteExperimentRequest(
        name=name,
        variant=variant,
        reason=reason,
        force=force,
        decision=evidence.decision,
        winner=evidence.winner,
        users_per_arm=evidence.users_per_arm,
        report_json=json.dumps(evidence.report, sort_keys=True, default=str),
    )
    _show(call("PromoteExperiment", request), as_json)
