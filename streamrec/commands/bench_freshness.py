"""``streamrec bench freshness``: event-to-answer latency under a background load.

Runs a worker and a server as subprocesses on throwaway topic and key prefixes (Kafka and
Redis from the usual ``STREAMREC_*`` settings), produces ``--rate`` outcome events per second,
and times probe events from the produce call to the first Recommend answer that reflects
them. See :mod:`streamrec.bench.freshness`. Mounted by the ``bench`` group as ``freshness``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from typing import Annotated, Any

import typer

from core.settings import settings
from streamrec.bench.freshness import FreshnessConfig, run_freshness_bench

__all__ = ["command"]


def _share(value: float | None) -> str:
    return "?" if value is None else f"{value:.0%}"


def _table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"event → answer   p50 {r['p50_ms']:.1f} ms   p95 {r['p95_ms']:.1f} ms   "
            f"p99 {r['p99_ms']:.1f} ms   (min {r['min_ms']:.1f}, max {r['max_ms']:.1f})",
            f"probes           {r['reflected']}/{r['probes']} reflected, {r['missed']} missed "
            f"(polled every {r['poll_interval_ms']:g} ms, {r['polls']:,} calls, "
            f"errors {r['rpc_errors'] or 'none'})",
            f"background load  {r['rate']:,.0f} events/s achieved (target {r['target_rate']:,.0f}),"
            f" {r['background_events']:,} events in {r['measured_s']:.1f} s",
            f"worker           batch {r['batch_size']} within {r['batch_within_ms']:g} ms, "
            f"{r['partitions']} partitions, backlog at end {r['backlog_end']:,}, "
            f"CPU {_share(r['worker_cpu'])} of a core (machine load {r['loadavg_1m']:.1f})",
        ]
    )


def command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    rate: Annotated[
        float,
        typer.Option("--rate", min=1.0, max=100_000.0, help="Background outcome events/s."),
    ] = 2000.0,
    probes: Annotated[
        int, typer.Option("--probes", min=1, max=10_000, help="Probe events to time.")
    ] = 50,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            min=0.1,
            max=3600.0,
            help="Spread the probes evenly over this many seconds (default: back to back).",
        ),
    ] = None,
    poll_ms: Annotated[
        float,
        typer.Option("--poll-ms", min=1.0, max=1000.0, help="Poll interval of a probe (ms)."),
    ] = 5.0,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.5, max=300.0, help="A probe not reflected by then misses."),
    ] = 10.0,
) -> None:
    """Event-to-answer latency (p50/p95/p99) with a worker and a server under load."""
    cfg = FreshnessConfig(
        rate=rate,
        probes=probes,
        duration_s=duration,
        poll_interval_s=poll_ms / 1000.0,
        probe_timeout_s=timeout,
    )
    # aiokafka warns while a fresh topic's leaders settle, then retries: not the user's concern
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        report = asyncio.run(_run(cfg))
    except asyncio.CancelledError:
        typer.echo("bench freshness: stopped by SIGTERM (subprocesses and topics cleaned up)")
        raise typer.Exit(143) from None
    typer.echo(json.dumps(report, sort_keys=True) if as_json else _table(report))


async def _run(cfg: FreshnessConfig) -> dict[str, Any]:
    """The bench, cancelled by SIGTERM so its subprocesses and topics are cleaned up."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run_freshness_bench(settings(), cfg)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
