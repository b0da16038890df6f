"""``streamrec produce``: validate JSON lines with the worker's rules, then produce the good ones.

Each non-blank line is decoded with :func:`streams.decode.decode` (same limits as the worker,
``now`` = the wall clock), so a line that passes here is accepted by the worker unless its
timestamp ages past the skew limit in between. Bad lines are reported as
``FILE:LINE: reason: error`` on stderr. The line bytes are produced unchanged, keyed by the
topic's key field (user_id for outcomes and exposures, item_id for items).

Exit status: 0 when every line was valid and sent; 1 when any line was rejected — even
though the valid lines were sent (with ``--strict`` nothing is sent at all); 2 when Kafka
or the arguments fail.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from core.errors import ConfigError
from core.settings import Settings, settings
from evaluation.datasets import BadLine, numbered_lines
from messaging.producer import EventProducer, message_key
from schemas.ids import Pseudonyms
from schemas.topics import Topic
from streams.decode import Rejected, decode

__all__ = ["ProduceTopic", "Validated", "command", "produce_lines", "validate_lines"]


class ProduceTopic(StrEnum):
    OUTCOMES = "outcomes"
    EXPOSURES = "exposures"
    ITEMS = "items"


@dataclass(slots=True)
class Validated:
    """Lines that passed (line number, key, value bytes) and those that did not."""

    good: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def validate_lines(
    lines: Iterable[bytes],
    topic: Topic,
    *,
    max_bytes: int,
    max_future_skew_s: float,
    now: float,
    pseudonyms: Pseudonyms | None = None,
) -> Validated:
    """Decode every non-blank line for ``topic``; keep the key and raw bytes of the good ones."""
    result = Validated()
    for number, raw in numbered_lines(lines):
        decoded = decode(
            raw,
            topic,
            max_bytes=max_bytes,
            max_future_skew_s=max_future_skew_s,
            now=now,
            pseudonyms=pseudonyms,  # pii_policy as in the worker (issue 19)
        )
        if isinstance(decoded, Rejected):
            result.bad.append(BadLine(number, decoded.reason.value, decoded.error))
        else:
            result.good.append((number, message_key(topic, decoded), raw))
    return result


async def produce_lines(cfg: Settings, topic: Topic, good: list[tuple[int, bytes, bytes]]) -> int:
    """Produce validated lines to ``topic``; return how many Kafka acknowledged."""
    async with EventProducer(cfg) as producer:
        for _, key, value in good:
            await producer.send_raw(topic, value, key)
        await producer.flush()
        return producer.delivered


def _read(file: str) -> Iterable[bytes]:
    if file == "-":
        return sys.stdin.buffer.readlines()
    try:
        return Path(file).read_bytes().splitlines(keepends=True)
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror or exc}") from exc


def command(
    topic: Annotated[
        ProduceTopic,
        typer.Argument(metavar="TOPIC", help="Logical topic: outcomes, exposures or items."),
    ],
    file: Annotated[str, typer.Argument(metavar="FILE", help="JSON lines file, or - for stdin.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Send nothing if any line is invalid.")
    ] = False,
) -> None:
    """Validate JSON-lines events like the worker does and produce the valid ones.

    Exit 0: all lines valid and sent. Exit 1: some line rejected (valid ones still sent).
    """
    cfg = settings()
    logical = Topic(topic.value)
    label = "<stdin>" if file == "-" else file
    checked = validate_lines(
        _read(file),
        logical,
        max_bytes=cfg.max_event_bytes,
        max_future_skew_s=cfg.max_future_skew_s,
        now=time.time(),
        pseudonyms=Pseudonyms.from_settings(cfg),
    )
    for bad in checked.bad:
        typer.echo(f"{label}:{bad.line}: {bad.reason}: {bad.error}", err=True)
    name = cfg.topic(logical.value)
    if strict and checked.bad:
        typer.echo(f"sent 0, rejected {len(checked.bad)} (--strict: nothing sent to {name})")
        raise typer.Exit(1)
    sent = asyncio.run(produce_lines(cfg, logical, checked.good)) if checked.good else 0
    typer.echo(f"sent {sent}, rejected {len(checked.bad)} (topic {name})")
    if checked.bad:
        raise typer.Exit(1)
