"""``streamrec demo``: the whole loop on this machine, live, with a summary at the end.

Thin adapter: options → :func:`streamrec.demo.runner.run_demo`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from core.settings import load_settings
from streamrec.demo.runner import DemoOptions, run_demo

__all__ = ["command"]


def command(
    duration: Annotated[
        float, typer.Option("--duration", min=1.0, help="Seconds of load (after start-up).")
    ] = 60.0,
    rate: Annotated[
        float, typer.Option("--rate", min=1.0, max=100_000.0, help="Outcome events per second.")
    ] = 200.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic shop.")] = 7,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--no-live",
            help="Live table (default on a terminal) or a progress line every 5 s.",
        ),
    ] = None,
) -> None:
    """Bring up the stack, a worker and a server; replay a synthetic shop live; summarise.

    Uses the stack at STREAMREC_KAFKA_BOOTSTRAP / STREAMREC_REDIS_URL (local addresses are
    started when down and stopped afterwards; a stack already running is left running).
    Topics and Redis keys live under a fresh demo-<time> prefix and are deleted at the end.
    Ctrl-C stops cleanly and prints the summary so far.
    """
    # aiokafka logs retried produce errors of a just-created topic (leader moving) as warnings
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    run_demo(load_settings(), DemoOptions(duration_s=duration, rate=rate, seed=seed, live=live))
