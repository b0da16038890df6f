"""``streamrec bench serve``: serving throughput and latency against a bare echo server.

Populates Redis (``STREAMREC_REDIS_URL``) under a throwaway key prefix, runs the real server
and a bare grpc.aio echo server of the same response size in this process, drives each from a
client process, prints the comparison and deletes the throwaway keys. ``--redis-client both``
measures the server's two request-path Redis clients (the wire client, redis-py) in the same
rounds; ``--exploration both`` measures the server with exploration slots on and off in the
same rounds (``serve_cpu_ratio``: CPU per request on / off). See
:mod:`streamrec.bench.serve`. Mounted by the ``bench`` group as its ``serve`` command.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from core.settings import settings
from streamrec.bench.serve import (
    EXPLORATION_CHOICES,
    REDIS_CLIENT_CHOICES,
    BenchConfig,
    run_bench,
)

__all__ = ["command"]


def _spread(runs: dict[str, float], unit: str = "") -> str:
    return f"{runs['median']:g}{unit} ({runs['min']:g}-{runs['max']:g})"


def _clients(report: dict[str, Any]) -> list[str]:
    """Per client: median (min-max) over rounds; then the paired ratios."""
    lines = [f"redis clients, median (min-max) of {report['rounds']} rounds:"]
    for kind, figures in report["clients"].items():
        lines.append(
            f"  {kind:<9} rps {_spread(figures['rps_runs'])}, "
            f"p50 {_spread(figures['p50_ms_runs'], ' ms')}, "
            f"p99 {_spread(figures['p99_ms_runs'], ' ms')}, "
            f"CPU/request {_spread(figures['cpu_ms_per_request_runs'], ' ms')}, "
            f"round trips/request {figures['redis_round_trips_per_request']:g}, "
            f"cache hit rates {figures['cache_hit_rates']}, "
            f"cache resets {figures['cache_resets']}, errors {figures['errors']}"
        )
    ratios = ", ".join(f"{name} {_spread(r)}" for name, r in report["redis_py_vs_wire"].items())
    lines.append(f"  redis-py / wire, same round: {ratios}")
    return lines


def _exploration(report: dict[str, Any]) -> list[str]:
    """Exploration on and off: median (min-max) over rounds; then the paired ratios."""
    lines = [f"exploration, median (min-max) of {report['rounds']} rounds:"]
    for mode, figures in report["exploration_modes"].items():
        lines.append(
            f"  {mode:<4} rps {_spread(figures['rps_runs'])}, "
            f"p50 {_spread(figures['p50_ms_runs'], ' ms')}, "
            f"p99 {_spread(figures['p99_ms_runs'], ' ms')}, "
            f"CPU/request {_spread(figures['cpu_ms_per_request_runs'], ' ms')}, "
            f"explored items/answer {figures['explored_items_per_answer']:g}"
        )
    ratios = ", ".join(
        f"{name} {_spread(r)}" for name, r in report["exploration_on_vs_off"].items()
    )
    lines.append(f"  on / off, same round: {ratios}")
    lines.append(
        f"  serve_cpu_ratio (CPU per request on / off): {_spread(report['serve_cpu_ratio'])}"
    )
    return lines


def _table(report: dict[str, Any]) -> str:
    rows = [
        ("", "server", "echo"),
        ("rps", f"{report['rps']:.0f}", f"{report['echo_rps']:.0f}"),
        ("p50 ms", f"{report['p50_ms']:.2f}", f"{report['echo_p50_ms']:.2f}"),
        ("p95 ms", f"{report['p95_ms']:.2f}", f"{report['echo_p95_ms']:.2f}"),
        ("p99 ms", f"{report['p99_ms']:.2f}", f"{report['echo_p99_ms']:.2f}"),
    ]
    lines = [f"{a:<8}{b:>12}{c:>12}" for a, b, c in rows]
    spread = report["ratio_runs"]
    lines.append(
        f"ratio (server rps / echo rps), median round of {report['rounds']}: "
        f"{report['ratio']:.3f} (min {spread['min']:.3f}, max {spread['max']:.3f})"
    )
    lines.append(f"redis round trips per request: {report['redis_round_trips_per_request']:.2f}")
    lines.append(
        f"server process CPU per request: {report['cpu_ms_per_request']:.3f} ms "
        f"(echo {report['echo_cpu_ms_per_request']:.3f} ms)"
    )
    lines.append(f"answer stages: {report['stages']}  errors: {report['errors']}")
    lines.append(
        f"exploration {report['exploration']} (share {report['exploration_share']:g}, pool "
        f"{report['pool_items']} items): {report['explored_items_per_answer']:g} explored "
        "items per answer"
    )
    if "exploration_modes" in report:
        lines.extend(_exploration(report))
    if "clients" in report:
        lines.extend(_clients(report))
    else:
        lines.append(f"redis client: {report['redis_client']}")
    lines.append(
        f"items {report['items']}, users {report['users']}, concurrency {report['concurrency']}, "
        f"{report['duration_s']:g}s per side, populate {report['populate_s']:.1f}s"
    )
    at = report.get("open_loop")
    if at:
        lines.append(
            f"open loop at {at['offered_rps']:g} req/s offered by {report['concurrency']} callers: "
            f"server {at['rps']:.0f} rps, p50 {at['p50_ms']:.2f} / p95 {at['p95_ms']:.2f} / "
            f"p99 {at['p99_ms']:.2f} ms (echo p50 {at['echo_p50_ms']:.2f} / "
            f"p99 {at['echo_p99_ms']:.2f} ms)"
        )
    return "\n".join(lines)


def command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=2000, help="Concurrent calls.")
    ] = 50,
    duration: Annotated[
        float, typer.Option("--duration", min=0.5, max=3600, help="Seconds measured per side.")
    ] = 10.0,
    items: Annotated[
        int, typer.Option("--items", min=100, max=10_000_000, help="Synthetic catalog size.")
    ] = 100_000,
    users: Annotated[
        int, typer.Option("--users", min=1, max=10_000_000, help="Synthetic users.")
    ] = 10_000,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Items per request.")] = 10,
    with_exposures: Annotated[
        bool,
        typer.Option("--with-exposures", help="Log exposures to Kafka (throwaway topics)."),
    ] = False,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            min=0.0,
            max=1_000_000.0,
            help="Also measure latency open loop: the callers together offer RATE requests/s "
            "(0: closed loop only).",
        ),
    ] = 0.0,
    rounds: Annotated[
        int,
        typer.Option("--rounds", min=1, max=50, help="Closed-loop rounds, each echo then server."),
    ] = 3,
    redis_client: Annotated[
        str,
        typer.Option(
            "--redis-client",
            metavar="|".join(REDIS_CLIENT_CHOICES),
            help="The server's request-path Redis client; both: each of them in every round "
            "(alternating order) with their figures and ratios side by side.",
        ),
    ] = "wire",
    exploration: Annotated[
        str,
        typer.Option(
            "--exploration",
            metavar="|".join(EXPLORATION_CHOICES),
            help="Exploration slots (the new-item pool is seeded): on (exploration_share), off, "
            "or both in every round (alternating order) with serve_cpu_ratio = CPU on / off.",
        ),
    ] = "on",
) -> None:
    """Benchmark Recommend against a bare grpc.aio echo server (ratio, p50/p95/p99)."""
    choice = next((c for c in REDIS_CLIENT_CHOICES if c == redis_client), None)
    if choice is None:
        raise typer.BadParameter(
            f"{redis_client!r} is not one of {', '.join(REDIS_CLIENT_CHOICES)}",
            param_hint="'--redis-client'",
        )
    mode = next((c for c in EXPLORATION_CHOICES if c == exploration), None)
    if mode is None:
        raise typer.BadParameter(
            f"{exploration!r} is not one of {', '.join(EXPLORATION_CHOICES)}",
            param_hint="'--exploration'",
        )
    cfg = BenchConfig(
        items=items,
        users=users,
        concurrency=concurrency,
        duration_s=duration,
        k=k,
        with_exposures=with_exposures,
        rate=rate,
        rounds=rounds,
        redis_client=choice,
        exploration=mode,
    )
    report = asyncio.run(run_bench(settings(), cfg))
    typer.echo(json.dumps(report, sort_keys=True) if as_json else _table(report))
