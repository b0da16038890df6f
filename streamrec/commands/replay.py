"""``streamrec replay``: produce a dataset to the outcomes topic as ``outcome.v1``, in event time.

The whole dataset is read and stably sorted by ``ts`` first (ties keep file order), then
produced keyed by user_id, optionally paced by ``--rate`` (a drift-free token bucket).
Bad lines are reported with their line numbers and skipped; they do not fail the replay.

Events are produced in Kafka transactions that also commit the replay's checkpoint
(:mod:`messaging.replay`): retriable broker errors are retried with backoff, within the
``replay_retry_*`` settings; past them the replay prints ``replay: gave up after …: resume
with --from-line N`` and exits 1. ``--from-line N`` starts at the event read from input line N
(in replay order: it and every event after it in event time), skipping what the checkpoint
shows committed already, so each line reaches the topic exactly once.

The progress bar is rich.progress: rich is already a dependency (typer renders help with
it), so no extra package, and it draws on stderr only when stderr is a terminal.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TimeRemainingColumn,
)

from core.errors import ConfigError
from core.settings import settings
from evaluation.datasets import BadLine, Dataset, DatasetFormat, ReadOptions, load_dataset
from messaging.replay import ReplayGaveUp, ReplayReport, TransactionalReplay
from schemas.events import Outcome
from schemas.topics import Topic

__all__ = ["ReplayResult", "command", "fingerprint", "start_position"]

MAX_REPORTED_LINES = 20
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ReplayResult:
    read: int
    produced: int
    skipped: dict[str, int]
    read_s: float
    produce_s: float
    #: --from-line: (line asked for, line actually started at) — later when the checkpoint
    #: showed the interrupted replay had committed past it
    resumed: tuple[int, int | None] | None = None


def _hash_file(path: Path, digest: Any) -> int:
    """Feed ``path``'s bytes to ``digest``; return its number of lines."""
    lines, last = 0, b"\n"
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
                lines += chunk.count(b"\n")
                last = chunk
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return lines + (not last.endswith(b"\n"))  # a last line without its newline


def fingerprint(path: Path, fmt: DatasetFormat) -> tuple[str, int | None]:
    """(digest of the format and the input's bytes, number of lines of a file input).

    A directory (MovieLens) hashes every file directly in it, by name; its line count is
    None. The same input replayed or resumed gets the same digest wherever it lies.
    """
    digest = hashlib.sha256(f"{fmt.value}\n".encode())
    if not path.is_dir():
        lines = _hash_file(path, digest)
        return digest.hexdigest(), lines
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{file.name}\n".encode())
        _hash_file(file, digest)
    return digest.hexdigest(), None


def start_position(dataset: Dataset, count: int, line: int, total_lines: int | None) -> int:
    """Position (in replay order) of the event read from input ``line``; ConfigError with a
    one-line reason when no event of this replay comes from that line."""
    try:
        position = dataset.lines.index(line)
    except ValueError:
        if total_lines is not None and line > total_lines:
            raise ConfigError(
                f"--from-line {line} is beyond the end of the input ({total_lines} lines)"
            ) from None
        raise ConfigError(
            f"--from-line {line}: that line is not an event (a header, a blank or bad line); "
            "give the line a replay that gave up printed"
        ) from None
    if position >= count:
        raise ConfigError(f"--from-line {line}: that event is beyond --limit {count}")
    return position


def _report_bad(path: Path, bad: list[BadLine]) -> None:
    for line in bad[:MAX_REPORTED_LINES]:
        typer.echo(f"{path}:{line.line}: {line.reason}: {line.error}", err=True)
    if len(bad) > MAX_REPORTED_LINES:
        typer.echo(f"{path}: … and {len(bad) - MAX_REPORTED_LINES} more bad lines", err=True)


def _with_progress(
    replay: TransactionalReplay, total: int, start: int, resume: bool
) -> ReplayReport:
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
        task = progress.add_task("replaying", total=total, completed=start)
        replay.on_progress = lambda n: progress.advance(task, n)
        return asyncio.run(replay.run(start, resume=resume))


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
            *_resumed(result),
            f"elapsed   {elapsed:.2f} s (read+sort {result.read_s:.2f} s, "
            f"produce {result.produce_s:.2f} s)",
            f"rate      {per_s:.0f} events/s produced",
        ]
    )


def _resumed(result: ReplayResult) -> list[str]:
    if result.resumed is None:
        return []
    asked, actual = result.resumed
    if actual == asked:
        return [f"resumed   from line {asked}"]
    where = f"from line {actual}" if actual is not None else "nothing left to produce"
    return [
        f"resumed   {where} (asked for line {asked}: the interrupted replay had committed "
        "up to there, its checkpoint says)"
    ]


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
    from_line: Annotated[
        int | None,
        typer.Option(
            "--from-line",
            min=1,
            help="Resume a replay that gave up: start at the event of this 1-based input "
            "line (the one it printed) and produce it and every event after it in event time.",
        ),
    ] = None,
) -> None:
    """Replay a dataset as outcome.v1 events, in event-time order, to the outcomes topic.

    movielens: u.data / ratings.csv / ratings.dat, each rating a "view" with value = rating.
    sessions: SessionId/ItemId/Time TSV, each row a "click" by user "s<SessionId>".
    jsonl: outcome.v1 JSON lines. Bad lines are reported and skipped (exit 0).
    Broker errors are retried; a replay that gives up prints the --from-line to resume with
    (exit 1): the resumed replay adds each remaining line exactly once.
    """
    cfg = settings()
    # a broker away makes aiokafka log every failed connect; the retry lines say it once each
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
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
    digest, total_lines = fingerprint(path, fmt)
    start = 0
    if from_line is not None:
        start = start_position(dataset, len(events), from_line, total_lines)
    read_s = time.monotonic() - started
    started = time.monotonic()
    replay = TransactionalReplay(cfg, events, fingerprint=digest, rate=rate)
    try:
        report = (
            _with_progress(replay, len(events), start, from_line is not None) if events else None
        )
    except ReplayGaveUp as exc:
        typer.echo(
            f"replay: {exc}: resume with --from-line {dataset.lines[exc.position]}", err=True
        )
        raise typer.Exit(1) from None
    resumed: tuple[int, int | None] | None = None
    if from_line is not None and report is not None:
        actual = dataset.lines[report.started] if report.started < len(events) else None
        resumed = (from_line, actual)
    result = ReplayResult(
        read=len(dataset.events),
        produced=report.committed - report.started if report is not None else 0,
        skipped=skipped,
        read_s=read_s,
        produce_s=time.monotonic() - started,
        resumed=resumed,
    )
    typer.echo(_summary(result, cfg.topic(Topic.OUTCOMES.value)))
