"""``streamrec monitor``: the independent lag / freshness / silence / CTR monitor process.

Watches the worker group from outside (a stuck or dead worker still shows growing lag),
emits ``alert.v1`` events on the alerts topic and serves ``/metrics`` on
``monitor_metrics_port`` (0 = off). Run one per deployment. Stops on SIGINT/SIGTERM after
saving its state.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from core.errors import ConfigError
from core.settings import settings as load
from streamrec.commands.logging_option import LogLevel, configure_logging


def command(
    loglevel: LogLevel = "info",
) -> None:
    """Watch consumer lag, freshness, topic silence and CTR; emit alert.v1 events."""
    level = configure_logging(loglevel)
    settings = load()
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    from prometheus_client import start_http_server

    from monitoring.lag_monitor_service import LagMonitorService

    service = LagMonitorService(settings)
    if settings.monitor_metrics_port:
        try:
            start_http_server(
                settings.monitor_metrics_port,
                addr=settings.metrics_bind_host,
                registry=service.registry,
            )
        except OSError as exc:
            raise ConfigError(
                f"monitor_metrics_port {settings.monitor_metrics_port}: {exc.strerror}"
            ) from exc

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    asyncio.run(main())
