"""``streamrec replay``: produce a dataset to the outcomes topic as ``outcome.v1``, in event time.

The whole dataset is read and stably sorted by ``ts`` first (ties keep file order), then
produced keyed by user_id, optionally paced by ``--rate`` (a drift-free token bucket).
Bad lines are reported with their line numbers and skipped; they do not fail the replay.

The progress bar is rich.progress: rich is already a dependency (typer renders help with
it), so no extra package, and it draws on stderr only when stderr is a terminal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TimeRemainingColumn,
)

from core.settings import Settings, settings
from evaluation.datasets import BadLine, DatasetFormat, ReadOptions, load_dataset
from messaging.producer import EventProducer, RateLimiter
from schemas.events import Outcome
from schemas.topics import Topic

__all__ = ["ReplayResult", "command", "produce_events"]

MAX_REPORTED_LINES = 20
_PROGRESS_EVERY_S = 0.1


@dataclass(frozen=True, slots=True)
class ReplayResult:
    read: int
    produced: int
    skipped: dict[str, int]
    read_s: float
    produce_s: float


async def produce_events(
    cfg: Settings,
    events: Sequence[Outcome],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce outcomes to the outcomes topic in the given order; return how many were acked."""
    limiter = RateLimiter(rate) if rate else None
    unreported, last_report = 0, time.monotonic()
    async with EventProducer(cfg) as producer:
        for event in events:
            if limiter is not None:
                await limiter.acquire()
            await producer.send_event(Topic.OUTCOMES, event)
            unreported += 1
            if on_progress is not None and time.monotonic() - last_report >= _PROGRESS_EVERY_S:
                on_progress(unreported)
                unreported, last_report = 0, time.monotonic()
        await producer.flush()
        if on_progress is not None:
            on_progress(unreported)
        return producer.delivered


def _report_bad(path: Path, bad: list[BadLine]) -> None:
    for line in bad[:MAX_REPORTED_LINES]:
        typer.echo(f"{path}:{line.line}: {line.reason}: {line.error}", err=True)
    if len(bad) > MAX_REPORTED_LINES:
        typer.echo(f"{path}: … and {len(bad) - MAX_REPORTED_LINES} more bad lines", err=True)


def _with_progress(cfg: Settings, events: Sequence[Outcome], rate: float | None) -> int:
    console = Console(stderr=True)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )
    with progress:
        task = progress.add_task("replaying", total=len(events))
        return asyncio.run(
            produce_events(cfg, events, rate=rate, on_progress=lambda n: progress.advance(task, n))
        )


def _summary(result: ReplayResult, topic: str) -> str:
    skipped = sum(result.skipped.values())
    reasons = ", ".join(f"{reason}: {count}" for reason, count in result.skipped.items())
    per_s = result.produced / result.produce_s if result.produce_s > 0 else 0.0
    elapsed = result.read_s + result.produce_s
    return "\n".join(
        [
            f"read      {result.read} events",
            f"produced  {result.produced} to {topic}",
            f"skipped   {skipped}" + (f" ({reasons})" if reasons else ""),
            f"elapsed   {elapsed:.2f} s (read+sort {result.read_s:.2f} s, "
            f"produce {result.produce_s:.2f} s)",
            f"rate      {per_s:.0f} events/s produced",
        ]
    )


def command(
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Dataset file (or directory).")],
    fmt: Annotated[
        DatasetFormat,
        typer.Option("--format", "-f", help="movielens, sessions or jsonl.", show_default=False),
    ],
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.001, help="Events per second (default: unlimited)."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Produce only the first N events in event time."),
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="context.tenant of every outcome (jsonl: where missing)."),
    ] = None,
    surface: Annotated[
        str | None,
        typer.Option("--surface", help="context.surface of every outcome (jsonl: where missing)."),
    ] = None,
) -> None:
    """Replay a dataset as outcome.v1 events, in event-time order, to the outcomes topic.

    movielens: u.data / ratings.csv / ratings.dat, each rating a "view" with value = rating.
    sessions: SessionId/ItemId/Time TSV, each row a "click" by user "s<SessionId>".
    jsonl: outcome.v1 JSON lines. Bad lines are reported and skipped (exit 0).
    """
    cfg = settings()
    started = time.monotonic()
    options = ReadOptions(
        tenant=tenant,
        surface=surface,
        max_event_bytes=cfg.max_event_bytes,
        max_future_skew_s=cfg.max_future_skew_s,
        now=time.time(),
    )
    dataset = load_dataset(path, fmt, options)
    _report_bad(path, dataset.bad)
    skipped = dataset.skipped_by_reason()
    events: Sequence[Outcome] = dataset.events
    if limit is not None and len(events) > limit:
        skipped["beyond --limit"] = len(events) - limit
        events = events[:limit]
    read_s = time.monotonic() - started
    started = time.monotonic()
    produced = _with_progress(cfg, events, rate) if events else 0
    result = ReplayResult(
        read=len(dataset.events),
        produced=produced,
        skipped=skipped,
        read_s=read_s,
        produce_s=time.monotonic() - started,
    )
    typer.echo(_summary(result, cfg.topic(Topic.OUTCOMES.value)))
