"""``streamrec bench``: benchmarks measured as ratios side by side in one run.

``ingest`` (full processor vs a bare faust agent), ``serve`` (server vs a bare echo server),
``freshness`` (event-to-answer latency under load), ``exploration`` (a seeded simulation with
hidden click probabilities, exploration off vs on).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from core.errors import ConfigError
from core.settings import settings
from streamrec.commands import bench_exploration, bench_freshness, bench_serve

app = typer.Typer(help="Benchmarks (ratios against a bare baseline, measured in one run).")
app.command("serve")(bench_serve.command)
app.command("freshness")(bench_freshness.command)
app.command("exploration")(bench_exploration.command)


def _ingest_table(r: dict[str, Any]) -> str:
    full, bare = r["full"], r["bare"]
    cpu_full, cpu_bare = r["cpu_per_event"]["full"], r["cpu_per_event"]["bare"]
    rows = [
        f"events                       {r['events']:,} x {r['rounds']} rounds",
        f"full processor events/s      {r['events_per_s']:,.0f} "
        f"(rounds: min {full['min']:,.0f}, max {full['max']:,.0f})",
        f"bare faust events/s          {r['bare_events_per_s']:,.0f} "
        f"(rounds: min {bare['min']:,.0f}, max {bare['max']:,.0f})",
        f"ratio (median round)         {r['ratio']:.2f} "
        f"(per round: {', '.join(f'{x:.2f}' for x in r['ratio_per_round'])})",
        f"Redis round trips per event  {r['redis_roundtrips_per_event']:.4f} "
        f"(batch size {r['batch_size']})",
        f"CPU per event, full / bare   worker {cpu_full['worker_us']:,.1f} / "
        f"{cpu_bare['worker_us']:,.1f} µs (busy {cpu_full['worker_utilisation']:.0%} / "
        f"{cpu_bare['worker_utilisation']:.0%}), Redis {cpu_full['redis_us']:,.1f} / "
        f"{cpu_bare['redis_us']:,.1f} µs",
        *_redis_us_rows(r["redis_us_per_event"]),
        f"Redis bytes per item         {r['bytes_per_item']:,.0f}",
        f"Redis bytes per user         {r['bytes_per_user']:,.0f}",
        f"memory after 2x the stream   {r['memory_growth']:+.1%} "
        f"({r['redis_bytes_stream']:,.0f} → {r['redis_bytes_stream_twice']:,.0f} B; "
        f"{r['memory_check_events']:,.0f} events, {r['memory_check_users']:,.0f} users)",
    ]
    return "\n".join(rows)


def _redis_us_rows(r: dict[str, Any]) -> list[str]:
    """Redis CPU per event of today's apply script against the baseline (issue 22)."""
    cur = r["current"]
    rows = [
        f"Redis CPU per event          {cur['median']:,.1f} µs "
        f"(rounds: min {cur['min']:,.1f}, max {cur['max']:,.1f})"
    ]
    if "baseline" in r:
        old, red = r["baseline"], r["reduction"]
        rows.append(
            f"  baseline apply script      {old['median']:,.1f} µs "
            f"(rounds: min {old['min']:,.1f}, max {old['max']:,.1f}); "
            f"{red['median']:.2f}x less (rounds: "
            f"{', '.join(f'{x:.2f}' for x in r['reduction_per_round'])})"
        )
    return rows


@app.command("ingest")
def ingest(
    events: Annotated[int, typer.Option("--events", min=1000, help="Synthetic events.")] = 100_000,
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=10, help="Bare/full pairs.")] = 2,
    items: Annotated[int, typer.Option("--items", min=10, help="Catalog size.")] = 20_000,
    users: Annotated[int, typer.Option("--users", min=10, help="Distinct users.")] = 10_000,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline/--no-baseline",
            help="Also run the worker with the apply script before issue 22 each round "
            "(Redis CPU per event side by side).",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sustained ingest throughput of the full processor vs a bare counting faust agent."""
    from streamrec.bench.ingest import IngestBenchConfig, run_ingest_bench

    if users > events:
        raise ConfigError("--users must not exceed --events")
    cfg = IngestBenchConfig(
        events=events, rounds=rounds, items=items, users=users, baseline=baseline
    )
    report = asyncio.run(run_ingest_bench(settings(), cfg))
    print(json.dumps(report, indent=2) if as_json else _ingest_table(report))
