"""Dataset readers: public interaction logs turned into ``outcome.v1`` events.

Pure iterators with no Kafka or Redis, shared by ``streamrec replay`` and the evaluator.
Every line becomes either an :class:`~schemas.events.Outcome` or a :class:`BadLine` (with its
1-based line number), never an exception: a bad line is counted, not fatal. Every event goes
through :func:`streams.decode.decode`, the worker's own rules (size, types, future skew).

Formats:

- ``movielens`` — ``u.data`` (tab-separated ``user item rating timestamp``, no header),
  ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) or ``ratings.dat``
  (``::``-separated), detected from the content; a directory holding one of them also works.
  Each rating becomes ``event_type="view"`` with ``value`` = the rating (0.5–5): a rating
  means the user consumed the item; how much they liked it stays available in ``value``.
- ``sessions`` — session-based recommendation TSV with a ``SessionId  ItemId  Time`` header
  (Time in epoch seconds): ``user_id = session_id = "s<SessionId>"``, ``event_type="click"``.
- ``jsonl`` — ``outcome.v1`` JSON lines, as produced to the outcomes topic.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from core.errors import ConfigError
from schemas.events import Context, Outcome
from schemas.topics import Topic
from streams.decode import Rejected, decode

__all__ = [
    "BadLine",
    "Dataset",
    "DatasetError",
    "DatasetFormat",
    "ReadOptions",
    "in_event_time_order",
    "load_dataset",
    "numbered_lines",
    "read_dataset",
    "read_jsonl",
    "read_movielens",
    "read_numbered",
    "read_sessions",
]

BAD_FORMAT = "bad_format"
_MOVIELENS_FILES = ("u.data", "ratings.csv", "ratings.dat")
_MOVIELENS_HEADER = ["userid", "movieid", "rating", "timestamp"]
_SESSION_COLUMNS = ("SessionId", "ItemId", "Time")


class DatasetFormat(StrEnum):
    MOVIELENS = "movielens"
    SESSIONS = "sessions"
    JSONL = "jsonl"


class DatasetError(ConfigError):
    """The file cannot be read as the format at all (missing, unreadable, unknown header)."""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A dataset line that did not become an event: its 1-based line number and why."""

    line: int
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How lines become events: optional context, and the worker's validation limits."""

    tenant: str | None = None
    surface: str | None = None
    max_event_bytes: int = 64 * 1024
    max_future_skew_s: float = 300.0
    now: float | None = None  # None: the clock when reading starts


@dataclass(slots=True)
class Dataset:
    """Events in event-time order (stable: ties keep file order) and the lines skipped."""

    events: list[Outcome] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    #: the 1-based input line of each event, in the order of ``events``
    lines: list[int] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(b.reason for b in self.bad).most_common())


Row = Outcome | BadLine


class _Validator:
    """Turns an outcome dict (or raw JSON bytes) into an event via the worker's decoder."""

    def __init__(self, options: ReadOptions) -> None:
        self._options = options
        self._now = time.time() if options.now is None else options.now
        context = {
            key: value
            for key, value in (("tenant", options.tenant), ("surface", options.surface))
            if value is not None
        }
        self._context = context or None
        self._filled: Context | None = None
        if self._context is not None:
            try:
                self._filled = Context.model_validate(self._context)
            except ValidationError as exc:
                message = exc.errors(include_url=False)[0]["msg"]
                raise DatasetError(f"bad --tenant/--surface: {message}") from None

    def raw(self, line: int, raw: bytes, *, fill_context: bool = False) -> Row:
        result = decode(
            raw,
            Topic.OUTCOMES,
            max_bytes=self._options.max_event_bytes,
            max_future_skew_s=self._options.max_future_skew_s,
            now=self._now,
        )
        if isinstance(result, Rejected):
            return BadLine(line, result.reason.value, result.error)
        assert isinstance(result, Outcome)
        if fill_context and self._filled is not None and result.context is None:
            return result.model_copy(update={"context": self._filled})
        return result

    def fields(self, line: int, data: dict[str, Any]) -> Row:
        if self._context is not None:
            data["context"] = self._context
        return self.raw(line, orjson.dumps(data))


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} is not finite: {text[:40]!r}")
    return value


def numbered_lines(handle: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines of a binary stream with their 1-based numbers, line ending stripped."""
    for number, raw in enumerate(handle, start=1):
        stripped = raw.rstrip(b"\r\n")
        if stripped.strip():
            yield number, stripped


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        yield from numbered_lines(handle)


def _text(number: int, raw: bytes) -> str | BadLine:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine(number, BAD_FORMAT, f"not UTF-8: {exc.reason} at byte {exc.start}")


def _movielens_file(path: Path) -> Path:
    if path.is_dir():
        for name in _MOVIELENS_FILES:
            if (path / name).is_file():
                return path / name
        raise DatasetError(f"{path}: no {', '.join(_MOVIELENS_FILES)} in this directory")
    return path


def read_movielens(path: Path, options: ReadOptions | None = None) -> Iterator[Row]:
    """MovieLens ratings (u.data, ratings.csv or ratings.dat) as ``view`` outcomes."""
    return (row for _, row in _movielens(path, options))


def _movielens(path: Path, options: ReadOptions | None) -> Iterator[tuple[int, Row]]:
    path = _movielens_file(path)
    validator = _Validator(options or ReadOptions())
    separator: str | None = None
    for number, raw in _lines(path):
        text = _text(number, raw)
        if isinstance(text, BadLine):
            yield number, text
            continue
        if separator is None:
            if [c.strip().lower() for c in text.split(",")] == _MOVIELENS_HEADER:
                separator = ","
                continue
            separator = next((s for s in ("\t", "::", ",") if s in text), None)
            if separator is None:
                raise DatasetError(
                    f"{path}:{number}: not MovieLens ratings (expected user, item, rating, "
                    f"timestamp separated by tab, '::' or ','): {text[:80]!r}"
                )
        parts = [p.strip() for p in text.split(separator)]
        if len(parts) != 4:
            yield number, BadLine(number, BAD_FORMAT, f"expected 4 fields, got {len(parts)}")
            continue
        user, item, rating, stamp = parts
        try:
            value = _number(rating, "rating")
            ts = _number(stamp, "timestamp")
        except ValueError as exc:
            yield number, BadLine(number, BAD_FORMAT, str(exc))
            continue
        data = {"user_id": user, "item_id": item, "event_type": "view", "ts": ts, "value": value}
        yield number, validator.fields(number, data)


def read_sessions(path: Path, options: ReadOptions | None = None) -> Iterator[Row]:
    """Session clicks (``SessionId  ItemId  Time`` TSV) as ``click`` outcomes."""
    return (row for _, row in _sessions(path, options))


def _sessions(path: Path, options: ReadOptions | None) -> Iterator[tuple[int, Row]]:
    validator = _Validator(options or ReadOptions())
    columns: dict[str, int] | None = None
    width = 0
    for number, raw in _lines(path):
        text = _text(number, raw)
        if isinstance(text, BadLine):
            yield number, text
            continue
        parts = [p.strip() for p in text.split("\t")]
        if columns is None:
            if not set(_SESSION_COLUMNS) <= set(parts):
                raise DatasetError(
                    f"{path}:{number}: expected a tab-separated header with "
                    f"{', '.join(_SESSION_COLUMNS)}, got {text[:80]!r}"
                )
            columns = {name: parts.index(name) for name in _SESSION_COLUMNS}
            width = len(parts)
            continue
        if len(parts) != width:
            yield number, BadLine(number, BAD_FORMAT, f"expected {width} fields, got {len(parts)}")
            continue
        session = f"s{parts[columns['SessionId']]}"
        try:
            ts = _number(parts[columns["Time"]], "Time")
        except ValueError as exc:
            yield number, BadLine(number, BAD_FORMAT, str(exc))
            continue
        data = {
            "user_id": session,
            "session_id": session,
            "item_id": parts[columns["ItemId"]],
            "event_type": "click",
            "ts": ts,
        }
        yield number, validator.fields(number, data)


def read_jsonl(path: Path, options: ReadOptions | None = None) -> Iterator[Row]:
    """``outcome.v1`` JSON lines; ``tenant``/``surface`` only fill in a missing context."""
    return (row for _, row in _jsonl(path, options))


def _jsonl(path: Path, options: ReadOptions | None) -> Iterator[tuple[int, Row]]:
    validator = _Validator(options or ReadOptions())
    for number, raw in _lines(path):
        yield number, validator.raw(number, raw, fill_context=True)


_READERS = {
    DatasetFormat.MOVIELENS: _movielens,
    DatasetFormat.SESSIONS: _sessions,
    DatasetFormat.JSONL: _jsonl,
}


def read_numbered(
    path: Path, fmt: DatasetFormat | str, options: ReadOptions | None = None
) -> Iterator[tuple[int, Row]]:
    """Rows of a dataset in file order, each with the 1-based number of its input line."""
    try:
        reader = _READERS[DatasetFormat(fmt)]
    except ValueError:
        raise DatasetError(
            f"unknown dataset format {fmt!r} (known: {', '.join(DatasetFormat)})"
        ) from None
    return reader(path, options)


def read_dataset(
    path: Path, fmt: DatasetFormat | str, options: ReadOptions | None = None
) -> Iterator[Row]:
    """Rows of a dataset in file order."""
    return (row for _, row in read_numbered(path, fmt, options))


def in_event_time_order(rows: Iterable[tuple[int, Row]]) -> Dataset:
    """Collect numbered rows (:func:`read_numbered`); sort the events by ``ts`` (stable, so
    ties keep file order), each keeping its line number in :attr:`Dataset.lines`."""
    bad: list[BadLine] = []
    numbered: list[tuple[int, Outcome]] = []
    for number, row in rows:
        if isinstance(row, BadLine):
            bad.append(row)
        else:
            numbered.append((number, row))
    numbered.sort(key=lambda pair: pair[1].ts)
    return Dataset(
        events=[event for _, event in numbered],
        bad=bad,
        lines=[number for number, _ in numbered],
    )


def load_dataset(
    path: Path, fmt: DatasetFormat | str, options: ReadOptions | None = None
) -> Dataset:
    """Read a whole dataset into event-time order, with each event's input line."""
    return in_event_time_order(read_numbered(path, fmt, options))
