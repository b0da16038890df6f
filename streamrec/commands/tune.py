"""``streamrec eval tune``: tune the settings on a log's held-out end, write them as a config file.

A thin adapter over :func:`evaluation.tune.tune`: parses arguments, prints one progress line
per trial on stderr, prints the best settings against the effective ones with the paired
intervals (text or JSON), writes the TOML config file. Exit 0 on success, 2 on bad arguments,
unreadable or unwritable files or an unreachable Redis (one-line error).
"""

from __future__ import annotations

import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from core.config_file import CONFIG_FILE_ENV
from core.errors import ConfigError
from core.settings import load_settings
from evaluation.datasets import DatasetFormat
from evaluation.protocol import SEED, PrequentialSpec

if TYPE_CHECKING:
    from evaluation.tune import TrialReport, TuneResult

_LABELS = {"hr": "HR", "mrr": "MRR", "ndcg": "NDCG"}


class TuneMetric(StrEnum):
    """What the search maximises (streamrec's mean over the holdout predictions)."""

    HR = "hr"
    MRR = "mrr"
    NDCG = "ndcg"


def _interval(found: list[float] | None) -> str:
    return "" if found is None else f" [{found[0]:.4f}, {found[1]:.4f}]"


def _progress_line(report: TrialReport, metric: str, k: int) -> str:
    label = f"{_LABELS[metric]}@{k}"
    return (
        f"trial {report.done}/{report.total} (#{report.number}): {label} {report.value:.4f}"
        f"{_interval(report.interval)} over {report.predictions:,} predictions · "
        f"best {report.best_value:.4f} (#{report.best_number}) · {report.seconds:.0f} s"
    )


def _verdict_lines(result: TuneResult) -> list[str]:
    lines = []
    for metric in ("hr", "mrr", "ndcg"):
        row = result.difference(metric)
        low, high = row.interval.low, row.interval.high
        lines.append(
            f"{_LABELS[metric] + f'@{result.k}':9}{row.a:9.4f}{row.b:9.4f}{row.diff:+9.4f}  "
            f"{f'[{low:+.4f}, {high:+.4f}]':20}  {row.verdict}"
        )
    return lines


def _summary(result: TuneResult, days: float) -> list[str]:
    """The figures, for the terminal and the config file's header."""
    c = result.comparison
    sample = "all predictions" if result.sample is None else f"a {result.sample:.0%} user sample"
    label = f"{_LABELS[result.metric]}@{result.k}"
    return [
        f"{result.trials_run} trials run, {result.trials_total} in the study "
        f"({result.storage}); best trial #{result.best_trial}: {label} "
        f"{result.best_sample_value:.4f}{_interval(result.best_sample_interval)} on {sample}",
        f"holdout (last {days:g} days), all {c.predictions:,} predictions, streamrec, "
        f"B − A = best − defaults, {c.level:.0%} paired bootstrap over {c.units:,} {c.unit}s:",
        f"{'metric':9}{'defaults':>9}{'best':>9}{'B − A':>9}  {'interval':20}  verdict",
        *_verdict_lines(result),
    ]


def _render(result: TuneResult, days: float, output: Path) -> str:
    width = max(len(name) for name in result.best)
    lines = [f"{'setting':{width}}  {'effective':>14}  {'best':>14}"]
    for name, value in result.best.items():
        mark = "  *" if name in result.changed else ""
        lines.append(f"{name:{width}}  {result.effective[name]!s:>14}  {value!s:>14}{mark}")
    lines.append(f"(* differs from the effective settings; {len(result.changed)} written)")
    lines.extend(_summary(result, days))
    lines.append(
        f"config written to {output}: {CONFIG_FILE_ENV}={output} streamrec serve | worker | "
        "eval prequential (`streamrec config` shows the values, source file)"
    )
    return "\n".join(lines)


def _check_output(target: Path, path: Path) -> None:
    """Fail before the first trial, not after the last, on an output that cannot be written."""
    if not target.parent.is_dir():
        raise ConfigError(f"--output {target}: no directory {target.parent}")
    if path.exists() and target.exists() and path.resolve() == target.resolve():
        raise ConfigError(f"--output {target} would overwrite the log")
    if target.suffix != ".toml":
        raise ConfigError(f"--output {target}: a config file's name ends in .toml")


def tune(
    path: Annotated[Path, typer.Argument(help="The log to tune on (its end is held out).")],
    holdout_days: Annotated[
        float,
        typer.Option(
            "--holdout-days",
            help="Replay the last D days of PATH as the test log of every trial (required; "
            "never tune on your real test log).",
        ),
    ],
    trials: Annotated[
        int,
        typer.Option(
            "--trials",
            min=1,
            max=10_000,
            help="Trials to run now (added to those already in --storage).",
        ),
    ] = 30,
    metric: Annotated[
        TuneMetric, typer.Option("--metric", help="What to maximise: hr | mrr | ndcg.")
    ] = TuneMetric.HR,
    fmt: Annotated[
        DatasetFormat, typer.Option("--format", help="movielens | sessions | jsonl.")
    ] = DatasetFormat.JSONL,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="List length.")] = 20,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the sampler, the user sample and the bootstrap."),
    ] = SEED,
    sample: Annotated[
        float | None,
        typer.Option(
            "--sample",
            help="Trials predict only for this seeded fraction (0, 1] of the users (every "
            "event is still learned); the final comparison uses all predictions.",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="TOML config file to write (default: PATH's name + .tune.toml, here); the "
            "final runs' JSON and per-prediction files go next to it.",
        ),
    ] = None,
    storage: Annotated[
        Path | None,
        typer.Option(
            "--storage",
            help="SQLite file of the study (default: the output's name with .db); a rerun "
            "with the same storage resumes the study.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Tune the co-visitation, session-neighbour and ranker settings on PATH's last D days.

    Each trial is one prequential replay of the holdout split (Optuna TPE, seeded, stored in
    SQLite: resumable). Then the best and the effective settings are replayed on every
    holdout prediction and compared paired; the best settings that differ from the effective
    ones are written as a TOML config file for STREAMREC_CONFIG_FILE.
    """
    target = output or Path(f"{path.name}.tune.toml")
    study_file = storage or target.with_suffix(".db")
    _check_output(target, path)
    base = load_settings()
    replay = PrequentialSpec(
        fmt=fmt, path=path, holdout_days=holdout_days, k=k, seed=seed, sample=sample
    )
    from evaluation.tune import TuneSpec, config_values, write_config
    from evaluation.tune import tune as run_tune

    spec = TuneSpec(
        replay=replay,
        trials=trials,
        metric=metric.value,
        seed=seed,
        storage=study_file,
        output=target,
    )
    spec.check()  # bad combinations fail before anything is read

    def on_trial(report: TrialReport) -> None:
        typer.echo(_progress_line(report, metric.value, k), err=True)

    def on_phase(text: str) -> None:
        typer.echo(text, err=True)

    result = run_tune(base, spec, on_trial=on_trial, on_phase=on_phase)
    command = shlex.join(["streamrec", *sys.argv[1:]])
    header = [
        "Settings tuned by `streamrec eval tune` (load with STREAMREC_CONFIG_FILE=this file;",
        "environment variables still override). Only values that differ from the effective",
        "settings of the tuning run are written.",
        f"command: {command}",
        f"metric: {_LABELS[metric.value]}@{k}, maximised over {result.trials_total} trials",
        *_summary(result, holdout_days),
    ]
    values = config_values(base, result.changed)
    write_config(target, values, header)
    if as_json:
        payload: dict[str, Any] = result.to_dict()
        payload["config_file"] = {"path": str(target.resolve()), "values": values}
        payload["command"] = command
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(_render(result, holdout_days, target))
