"""``streamrec serve``: run the gRPC recommender server until SIGTERM / SIGINT.

Listens on ``STREAMREC_GRPC_ADDR`` (or ``--addr``), serves ``/metrics`` on
``STREAMREC_SERVER_METRICS_PORT`` (or ``--metrics-port``; 0 = off). Starts even when Redis
or Kafka are down (answers fall back, exposures wait in the buffer); exits 2 with one line
when the address cannot be bound or a setting is bad.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from core.settings import load_settings
from serving.server import run_server

__all__ = ["command"]


def command(
    addr: Annotated[
        str | None, typer.Option("--addr", metavar="HOST:PORT", help="Listen address.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="/metrics port (0 = off).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="Python log level.")] = "INFO",
) -> None:
    """Run the gRPC recommender server (Recommender, Admin, health, reflection)."""
    overrides: dict[str, object] = {}
    if addr is not None:
        overrides["grpc_addr"] = addr
    if metrics_port is not None:
        overrides["server_metrics_port"] = metrics_port
    settings = load_settings(**overrides)
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_server(settings))
