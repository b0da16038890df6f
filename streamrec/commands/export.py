"""``streamrec export``: dump a topic to JSON lines (for A/B analysis of exposures/outcomes).

By default it reads every partition from its first offset up to the end offsets captured at
start, then stops: a consistent snapshot even while producers keep writing. Message values
are written as they are, one per line; a value that is JSON but spans several lines is
re-serialised compactly, and values that are not JSON (or tombstones) are skipped and
counted. ``--from-end`` instead follows new messages until ``--max`` or ``--timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, BinaryIO

import orjson
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core import kafka_clients
from core.errors import ConfigError, UnavailableError
from core.settings import Settings, settings
from messaging import kafka_admin
from schemas.topics import Topic

__all__ = ["ExportResult", "command", "export_topic"]


@dataclass(slots=True)
class ExportResult:
    written: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    partitions: int = 0


def _line(value: bytes | None) -> bytes | str:
    """The JSON line to write for a message value, or the reason it is skipped."""
    if value is None:
        return "tombstone"
    if b"\n" not in value and b"\r" not in value:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            return "not_json"
        return value
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return "not_json"


async def export_topic(
    cfg: Settings,
    topic: Topic,
    out: BinaryIO,
    *,
    from_beginning: bool = True,
    max_messages: int | None = None,
    timeout_s: float = 60.0,
) -> ExportResult:
    """Write the topic's messages to ``out``; see the module docstring for when it stops."""
    name = cfg.topic(topic.value)
    wait = cfg.network_timeout_s
    if name in await kafka_admin.missing_topics(cfg):
        raise ConfigError(f"topic {name} does not exist (create it with `streamrec topics create`)")
    # partitions and end offsets, captured before reading starts
    offsets = await kafka_admin.end_offsets(cfg, [name])
    end = {TopicPartition(t, p): offset for (t, p), offset in sorted(offsets.items())}
    consumer = kafka_clients.consumer(
        cfg, client_id="streamrec-export", request_timeout_s=wait * 3, group_id=None
    )
    try:
        await asyncio.wait_for(consumer.start(), wait)
    except (TimeoutError, KafkaError, OSError) as exc:
        await asyncio.wait_for(consumer.stop(), wait)
        raise UnavailableError(
            f"Kafka at {cfg.kafka_bootstrap} did not answer within {wait:g} s: {exc}"
        ) from exc
    try:
        return await _consume(
            consumer, name, end, out, from_beginning, max_messages, timeout_s, wait
        )
    except KafkaError as exc:
        raise UnavailableError(f"reading {name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        await asyncio.wait_for(consumer.stop(), wait)


async def _consume(
    consumer: AIOKafkaConsumer,
    name: str,
    end: dict[TopicPartition, int],
    out: BinaryIO,
    from_beginning: bool,
    max_messages: int | None,
    timeout_s: float,
    wait: float,
) -> ExportResult:
    tps = list(end)
    consumer.assign(tps)
    result = ExportResult(partitions=len(tps))
    if from_beginning:
        begin = await asyncio.wait_for(consumer.beginning_offsets(tps), wait)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        remaining = {tp for tp in tps if begin[tp] < end[tp]}
    else:
        for tp in tps:
            consumer.seek(tp, end[tp])
        remaining = set(tps)
    deadline = time.monotonic() + timeout_s
    while remaining and (max_messages is None or result.written < max_messages):
        left = deadline - time.monotonic()
        if left <= 0:
            if from_beginning:
                raise UnavailableError(
                    f"timed out after {timeout_s:g} s with {result.written} messages written; "
                    f"{len(remaining)} partition(s) of {name} not read to their end offsets"
                )
            break
        batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000), max_records=5000)
        for tp, messages in batch.items():
            for message in messages:
                if from_beginning and message.offset >= end[tp]:
                    break
                if max_messages is not None and result.written >= max_messages:
                    break
                line = _line(message.value)
                if isinstance(line, str):
                    result.skipped[line] += 1
                    continue
                out.write(line + b"\n")
                result.written += 1
        if from_beginning:
            for tp in list(remaining):
                if await asyncio.wait_for(consumer.position(tp), wait) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
    out.flush()
    return result


def _output(file: str) -> contextlib.AbstractContextManager[BinaryIO]:
    if file == "-":
        return contextlib.nullcontext(sys.stdout.buffer)
    try:
        return open(file, "wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {file}: {exc.strerror or exc}") from exc


def command(
    topic: Annotated[
        str,
        typer.Argument(
            metavar="TOPIC",
            help="Logical topic: outcomes, exposures, items, deadletter or alerts.",
        ),
    ],
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="Output JSON lines, or - for stdout.")
    ],
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning/--from-end",
            help="Snapshot from the first offsets to the end offsets at start (default), "
            "or follow new messages from the end until --max or --timeout.",
        ),
    ] = True,
    max_messages: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after N messages.")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Most seconds to spend; a snapshot not finished by then is an error.",
        ),
    ] = 60.0,
) -> None:
    """Export a topic to JSON lines (the event JSON as produced), e.g. for A/B analysis."""
    try:
        logical = Topic(topic)
    except ValueError:
        raise typer.BadParameter(
            f"unknown topic {topic!r} (known: {', '.join(t.value for t in Topic)})",
            param_hint="TOPIC",
        ) from None
    cfg = settings()
    with _output(file) as out:
        result = asyncio.run(
            export_topic(
                cfg,
                logical,
                out,
                from_beginning=from_beginning,
                max_messages=max_messages,
                timeout_s=timeout,
            )
        )
    skipped = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.skipped.items()))
    typer.echo(
        f"exported {result.written} messages from {cfg.topic(logical.value)} "
        f"({result.partitions} partitions) to {'<stdout>' if file == '-' else file}"
        + (f"; skipped {skipped}" if skipped else ""),
        err=True,
    )
