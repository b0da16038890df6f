"""``streamrec eval prequential``: test-then-learn replay of a log through the real worker/server.

A thin adapter over :func:`evaluation.prequential.run_prequential`: parses arguments, shows a
progress bar on stderr (when it is a terminal), prints text or JSON. Exit 0 on success, 2 on
bad arguments, unreadable files or an unreachable Redis (one-line error).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import ConfigError
from core.settings import load_settings
from evaluation.datasets import DatasetFormat
from evaluation.protocol import LEVEL, SEED, PrequentialSpec, Protocol

if TYPE_CHECKING:
    from evaluation.prequential import PrequentialResult


def _with_interval(value: float, interval: list[float] | None) -> str:
    """``0.6821 [0.6732, 0.6910]`` (the value alone without an interval), 25 wide."""
    if interval is None:
        return f"{value:<25.4f}"
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]  "


def _render(result: PrequentialResult) -> str:
    s, payload = result.settings, result.to_dict()
    lines = [
        f"protocol {s['protocol']} ({s['targets']}), k={result.k}, "
        f"{s['events']} events, {s['catalog']} items, "
        f"{s['replay_s']:.1f} s ({s['events_per_s']:.0f} events/s)",
        f"{'':12}{'HR@k':25}{'MRR@k':25}{'NDCG@k':25}{'coverage':>8}{'n':>9}",
    ]
    for name in ("streamrec", "popularity"):
        row = payload[name]
        lines.append(
            f"{name:12}"
            + "".join(_with_interval(row[key], row[f"{key}_ci"]) for key in ("hr", "mrr", "ndcg"))
            + f"{row['coverage']:8.4f}{row['n']:9d}"
        )
    info = payload["intervals"]
    if info is not None:
        lines.append(
            f"[…]: {info['level']:.0%} intervals, {info['method']} over {info['units']:,} "
            f"{info['unit']}s ({info['resamples']:,} resamples, seed {info['seed']})"
        )
    if s.get("sample") is not None:
        lines.append(f"sample: predictions for a seeded {s['sample']:.0%} of the {info_unit(s)}s")
    if result.predictions_file is not None:
        lines.append(f"per-prediction results: {result.predictions_file['path']}")
    return "\n".join(lines)


def info_unit(settings: dict[str, Any]) -> str:
    """A run's prediction unit: a session log's user is the session."""
    return "session" if settings.get("format") == DatasetFormat.SESSIONS.value else "user"


def _check_writable(target: Path, inputs: tuple[Path | None, ...]) -> None:
    """Fail before the replay, not after it, on a --predictions file that cannot be written."""
    if not target.parent.is_dir():
        raise ConfigError(f"--predictions {target}: no directory {target.parent}")
    if any(p is not None and p.exists() and p.resolve() == target.resolve() for p in inputs):
        raise ConfigError(f"--predictions {target} would overwrite an input log")


def prequential(
    path: Annotated[Path, typer.Argument(help="The log to replay (the training log with --test).")],
    fmt: Annotated[
        DatasetFormat, typer.Option("--format", help="movielens | sessions | jsonl.")
    ] = DatasetFormat.JSONL,
    test: Annotated[
        Path | None,
        typer.Option("--test", help="Test log: learn PATH first, then replay this one."),
    ] = None,
    holdout_days: Annotated[
        float | None,
        typer.Option(
            "--holdout-days",
            help="Instead of --test: replay the last D days of PATH as the test log (tune "
            "settings on this, report on the real test log; see docs/evaluation.md).",
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="List length.")] = 20,
    protocol: Annotated[
        Protocol | None,
        typer.Option(
            "--protocol",
            help="With --test: streaming (learn each test event after scoring it, default) "
            "or batch (never learn the test log). Without --test: prequential.",
        ),
    ] = None,
    pipeline: Annotated[
        int,
        typer.Option(
            "--pipeline",
            min=1,
            max=10_000,
            help="Consecutive events of distinct users scored against the same state before "
            "they are learned (1 = exact test-then-learn).",
        ),
    ] = 64,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=1000, help="Requests in flight.")
    ] = 32,
    seed: Annotated[
        int, typer.Option("--seed", help=f"Seed of the bootstrap's {LEVEL:.0%} intervals.")
    ] = SEED,
    sample: Annotated[
        float | None,
        typer.Option(
            "--sample",
            help="Predict only for a seeded fraction (0, 1] of the users (sessions), chosen by "
            "--seed; every event is still learned. The intervals are the sample's.",
        ),
    ] = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            help="Write one CSV row per prediction to this file (its path goes into the "
            "JSON; `eval compare` reads it).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Replay a log in time order: ask top-k first, then learn; report HR, MRR, NDCG, coverage.

    Streamrec and a popularity baseline are asked the same questions against the same state,
    kept in Redis (STREAMREC_REDIS_URL) under a throwaway key prefix deleted afterwards.
    HR, MRR and NDCG come with bootstrap intervals resampling users (sessions).
    """
    settings = load_settings()
    spec = PrequentialSpec(
        fmt=fmt,
        path=path,
        test=test,
        holdout_days=holdout_days,
        k=k,
        protocol=protocol,
        pipeline=pipeline,
        concurrency=concurrency,
        seed=seed,
        sample=sample,
    )
    spec.resolved_protocol()  # bad combinations fail before anything is read
    if predictions is not None:
        _check_writable(predictions, (path, test))
    from evaluation.prequential import run_prequential  # the worker + server stack: ~0.5 s

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    task = bar.add_task("replay", total=None)

    def on_progress(phase: str, done: int, total: int) -> None:
        bar.update(task, description=phase, completed=done, total=total)

    with bar:
        result = asyncio.run(run_prequential(settings, spec, progress=on_progress))
    if predictions is not None and result.table is not None:
        from evaluation.predictions import write_predictions

        written = write_predictions(predictions, result.table)
        result = dataclasses.replace(result, predictions_file=written)
    payload: dict[str, Any] = result.to_dict()
    if as_json:
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(_render(result))
