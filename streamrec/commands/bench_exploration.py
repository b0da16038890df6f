"""``streamrec bench exploration``: the seeded simulation with exploration off and on.

Two runs on throwaway prefixes, each with a real worker and server (Kafka and Redis from the
usual ``STREAMREC_*`` settings); users click by hidden probabilities, so the report has ground
truth: clicks, regret against an oracle, time to a new item's first impression, coverage,
long-tail share. See :mod:`streamrec.bench.exploration`. Mounted by ``bench`` as
``exploration``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Annotated, Any

import typer

from core.settings import settings
from streamrec.bench.exploration import ExplorationBenchConfig, run_exploration_bench
from streamrec.bench.exploration_sim import SimConfig

__all__ = ["command"]


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "?" if value is None else fmt.format(value)


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1%}"


def _table(r: dict[str, Any]) -> str:
    on, off = r["on"], r["off"]
    rows = [f"{'':34}{'off':>14}{'on':>14}"]

    def row(name: str, key: str, show: Any = _num) -> None:
        rows.append(f"{name:34}{show(off[key]):>14}{show(on[key]):>14}")

    row("answers", "answers", lambda v: f"{v:,}")
    row("clicks", "clicks", lambda v: f"{v:,}")
    row("clicks per 1,000 answers", "clicks_per_1000")
    row("expected clicks (hidden p)", "expected_clicks")
    row("regret per 1,000 (vs oracle)", "regret_per_1000")
    row("explored impressions", "explored_impressions", lambda v: f"{v:,}")
    row(f"new items shown within {r['within_answers']:,}", "new_items_shown_within", _pct)
    row("new items never shown", "new_items_never_shown", _pct)
    row("first impression p50 (answers)", "first_impression_answers_p50", _num)
    row("first impression p95 (answers)", "first_impression_answers_p95", _num)
    row("first impression p50 (s)", "first_impression_s_p50", _num)
    row("first impression p95 (s)", "first_impression_s_p95", _num)
    row("catalog coverage", "coverage", _pct)
    row("long-tail share of impressions", "long_tail_share", _pct)
    row("server CPU per answer (ms)", "server_cpu_ms_per_answer", lambda v: _num(v, "{:.2f}"))
    row("seconds", "seconds")
    rows.append(
        f"clicks per 1,000 on vs off: {r['clicks_per_1000_change']:+.1%}; new items "
        f"{on['new_items']} ({on['new_items_censored']} censored); "
        f"server CPU on/off {_num(r['serve_cpu_ratio'], '{:.2f}')}; "
        f"machine load {r['loadavg_1m']:.1f}"
    )
    return "\n".join(rows)


def command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    answers: Annotated[
        int, typer.Option("--answers", min=10, max=1_000_000, help="Answers per run.")
    ] = 5000,
    items: Annotated[
        int, typer.Option("--items", min=24, max=100_000, help="Catalog size (20 % arrive).")
    ] = 300,
    users: Annotated[int, typer.Option("--users", min=1, max=100_000, help="Users.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated world.")] = 7,
    share: Annotated[
        float,
        typer.Option("--share", min=0.01, max=0.5, help="Exploration share of the 'on' run."),
    ] = 0.1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="Requests in flight.")
    ] = 4,
) -> None:
    """Seeded shop with hidden click probabilities: exploration off vs on, side by side."""
    cfg = ExplorationBenchConfig(
        sim=SimConfig(answers=answers, items=items, users=users, seed=seed),
        share=share,
        concurrency=concurrency,
    )
    cfg.check()
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        report = asyncio.run(_run(cfg))
    except asyncio.CancelledError:
        typer.echo("bench exploration: stopped by SIGTERM (subprocesses and topics cleaned up)")
        raise typer.Exit(143) from None
    typer.echo(json.dumps(report, sort_keys=True) if as_json else _table(report))


async def _run(cfg: ExplorationBenchConfig) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_exploration_bench(settings(), cfg)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
