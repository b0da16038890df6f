"""``streamrec worker``: run the stream processor (faust app) until SIGINT/SIGTERM.

Several processes started with the same settings join one consumer group and share the
topics' partitions. At start the worker checks that every topic exists and names the
missing ones (create them with ``streamrec topics create``).
"""

from __future__ import annotations

import asyncio

from core.errors import ConfigError
from core.settings import settings as load
from streamrec.commands.logging_option import LogLevel, configure_logging


def command(
    loglevel: LogLevel = "info",
) -> None:
    """Run the stream processor: Kafka events in, one atomic Redis update per batch."""
    level = configure_logging(loglevel)
    settings = load()
    from messaging import kafka_admin

    missing = asyncio.run(kafka_admin.missing_topics(settings))
    if missing:
        raise ConfigError(f"missing topics: {', '.join(missing)} (run 'streamrec topics create')")
    import faust

    from runtime.worker import build_worker_app

    app = build_worker_app(settings)
    worker = faust.Worker(app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
