"""The ``--loglevel`` option of the long-running commands (worker, monitor), declared once."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from core.errors import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LogLevel = Annotated[
    str, typer.Option("--loglevel", help="Log level: debug, info, warning, error.")
]


def configure_logging(loglevel: str) -> str:
    """Validate ``--loglevel``, configure the root logger, and return the upper-case level."""
    level = loglevel.upper()
    if level not in LEVELS:
        raise ConfigError(f"--loglevel must be debug, info, warning or error, got {loglevel!r}")
    logging.basicConfig(level=level, format=LOG_FORMAT)
    return level
