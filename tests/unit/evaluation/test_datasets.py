"""Dataset readers: formats, bad lines with numbers, stable event-time order, the rsc15 file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from evaluation.datasets import (
    BAD_FORMAT,
    BadLine,
    DatasetError,
    ReadOptions,
    load_dataset,
    read_dataset,
)
from schemas.events import EventType, Outcome
from tests.support import REPO

SHARED = REPO.parent / "shared" / "data"
RSC15 = SHARED / "rsc15-100k" / "yoochoose-clicks-100k_train_full.txt"
NOW = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
OPTS = ReadOptions(now=NOW)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def bad_lines(path: Path, fmt: str) -> list[tuple[int, str]]:
    return [(b.line, b.reason) for b in load_dataset(path, fmt, OPTS).bad]


def test_movielens_u_data(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "u.data",
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "22\t377\tone\t878887116\n"  # bad rating
        "\n"  # blank: ignored
        "244\t51\t2\t880606923\t9\n"  # five fields
        "166\t346\t1\t886397596\n",
    )
    data = load_dataset(path, "movielens", OPTS)
    assert [(b.line, b.reason) for b in data.bad] == [(3, BAD_FORMAT), (5, BAD_FORMAT)]
    assert "rating" in data.bad[0].error
    assert [(e.user_id, e.item_id) for e in data.events] == [
        ("196", "242"),
        ("166", "346"),
        ("186", "302"),
    ]
    first = data.events[0]
    assert first.event_type is EventType.VIEW
    assert first.value == 3.0
    assert first.ts == datetime.fromtimestamp(881250949, tz=UTC)
    assert first.context is None


def test_movielens_ratings_csv_with_header_and_context(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,x,,1\n",
    )
    data = load_dataset(path, "movielens", ReadOptions(tenant="ml", surface="replay", now=NOW))
    assert len(data.events) == 2
    assert data.bad == [data.bad[0]]
    assert data.bad[0].line == 4
    assert [e.item_id for e in data.events] == ["3", "1"]
    assert data.events[0].value == 4.5
    context = data.events[0].context
    assert context is not None
    assert (context.tenant, context.surface) == ("ml", "replay")


def test_movielens_ratings_dat_and_directory(tmp_path: Path) -> None:
    write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    data = load_dataset(tmp_path, "movielens", OPTS)  # a directory holding ratings.dat
    assert [e.item_id for e in data.events] == ["1193", "661"]


def test_movielens_unrecognised_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x.txt", "hello world\n")
    with pytest.raises(DatasetError, match="not MovieLens"):
        load_dataset(path, "movielens", OPTS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no u\.data"):
        load_dataset(tmp_path / "empty", "movielens", OPTS)


def test_movielens_milliseconds_are_rejected_as_invalid(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "1\t2\t3\t881250949000\n")
    assert bad_lines(path, "movielens") == [(1, "invalid")]


def test_sessions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "clicks.tsv",
        "SessionId\tItemId\tTime\n"
        "3\t214716935\t1396437466.94\n"
        "3\t214832672\t1396438212.318\n"
        "6\t214701242\t1396437466.94\n"  # same time as line 2: ties keep file order
        "7\t\t1396437000\n"  # empty item id
        "8\t1\tsoon\n"
        "9\t1\n",
    )
    data = load_dataset(path, "sessions", OPTS)
    assert [(b.line, b.reason) for b in data.bad] == [
        (5, "invalid"),
        (6, BAD_FORMAT),
        (7, BAD_FORMAT),
    ]
    assert [(e.user_id, e.item_id) for e in data.events] == [
        ("s3", "214716935"),
        ("s6", "214701242"),
        ("s3", "214832672"),
    ]
    event = data.events[0]
    assert event.session_id == "s3"
    assert event.event_type is EventType.CLICK
    assert event.ts == datetime.fromtimestamp(1396437466.94, tz=UTC)


def test_sessions_columns_found_by_header(tmp_path: Path) -> None:
    path = write(tmp_path, "c.tsv", "Time\tItemId\tSessionId\n1396437466\t5\t1\n")
    (event,) = load_dataset(path, "sessions", OPTS).events
    assert (event.user_id, event.item_id) == ("s1", "5")
    with pytest.raises(DatasetError, match="header"):
        load_dataset(write(tmp_path, "d.tsv", "1\t2\t3\n"), "sessions", OPTS)


def test_jsonl(tmp_path: Path) -> None:
    good = {"user_id": "u", "item_id": "i", "event_type": "purchase", "ts": "2024-01-02T00:00:00Z"}
    lines = [
        orjson.dumps(good),
        b"{not json",
        orjson.dumps({**good, "ts": "2024-01-01T00:00:00Z", "value": 9.5}),
        orjson.dumps({**good, "ts": NOW + 3600}),
        orjson.dumps({**good, "schema": "item.v1"}),
        orjson.dumps({**good, "colour": "red"}),
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    data = load_dataset(path, "jsonl", OPTS)
    assert [(b.line, b.reason) for b in data.bad] == [
        (2, "not_json"),
        (4, "future_timestamp"),
        (5, "unknown_event_type"),
        (6, "invalid"),
    ]
    assert [e.value for e in data.events] == [9.5, None]
    assert data.skipped_by_reason() == {
        "not_json": 1,
        "future_timestamp": 1,
        "unknown_event_type": 1,
        "invalid": 1,
    }


def test_reader_rows_are_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "1\t1\t1\t900000000\nbad\n1\t2\t1\t890000000\n")
    rows = list(read_dataset(path, "movielens", OPTS))
    assert [type(r) for r in rows] == [Outcome, BadLine, Outcome]


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset format"):
        read_dataset(tmp_path, "parquet", OPTS)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl", "jsonl", OPTS)


def test_not_utf8_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "s.tsv"
    path.write_bytes(b"SessionId\tItemId\tTime\n1\t\xff\xfe\t1396437466\n1\t2\t1396437466\n")
    data = load_dataset(path, "sessions", OPTS)
    assert [(b.line, b.reason) for b in data.bad] == [(2, BAD_FORMAT)]
    assert len(data.events) == 1


def test_rsc15_sample_reads_completely() -> None:
    assert RSC15.is_file(), f"shared dataset missing: {RSC15}"
    data = load_dataset(RSC15, "sessions")
    assert data.bad == []
    assert len(data.events) == 70_278
    stamps = [e.ts for e in data.events]
    assert stamps == sorted(stamps)
    assert all(e.user_id.startswith("s") and e.user_id == e.session_id for e in data.events)


def test_jsonl_context_is_filled_only_where_missing(tmp_path: Path) -> None:
    base = {"user_id": "u", "item_id": "i", "event_type": "view", "ts": 1714000000}
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        orjson.dumps(base) + b"\n" + orjson.dumps({**base, "context": {"tenant": "own"}}) + b"\n"
    )
    events = load_dataset(path, "jsonl", ReadOptions(tenant="t", now=NOW)).events
    assert [e.context.tenant if e.context else None for e in events] == ["t", "own"]


def test_bad_context_option_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "u.data", "1\t2\t3\t881250949\n")
    with pytest.raises(DatasetError, match="--tenant"):
        load_dataset(path, "movielens", ReadOptions(tenant="x" * 300, now=NOW))
