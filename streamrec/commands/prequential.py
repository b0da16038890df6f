"""``streamrec eval prequential``: test-then-learn replay of a log through the real worker/server.

A thin adapter over :func:`evaluation.prequential.run_prequential`: parses arguments, shows a
progress bar on stderr (when it is a terminal), prints text or JSON. Exit 0 on success, 2 on
bad arguments, unreadable files or an unreachable Redis (one-line error).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.settings import load_settings
from evaluation.datasets import DatasetFormat
from evaluation.protocol import PrequentialSpec, Protocol

if TYPE_CHECKING:
    from evaluation.prequential import PrequentialResult


def _render(result: PrequentialResult) -> str:
    s = result.settings
    lines = [
        f"protocol {s['protocol']} ({s['targets']}), k={result.k}, "
        f"{s['events']} events, {s['catalog']} items, "
        f"{s['replay_s']:.1f} s ({s['events_per_s']:.0f} events/s)",
        f"{'':12}{'HR@k':>8}{'MRR@k':>8}{'NDCG@k':>8}{'coverage':>10}{'n':>9}",
    ]
    for name, scores in (("streamrec", result.streamrec), ("popularity", result.popularity)):
        lines.append(
            f"{name:12}{scores.hr:8.4f}{scores.mrr:8.4f}{scores.ndcg:8.4f}"
            f"{scores.coverage:10.4f}{scores.n:9d}"
        )
    return "\n".join(lines)


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
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Replay a log in time order: ask top-k first, then learn; report HR, MRR, NDCG, coverage.

    Streamrec and a popularity baseline are asked the same questions against the same state,
    kept in Redis (STREAMREC_REDIS_URL) under a throwaway key prefix deleted afterwards.
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
    )
    spec.resolved_protocol()  # bad combinations fail before anything is read
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
    payload: dict[str, Any] = result.to_dict()
    if as_json:
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(_render(result))
