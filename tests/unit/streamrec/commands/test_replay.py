"""``streamrec replay --from-line``: which event a line names, the input's fingerprint, and
one-line errors for lines that name no event (no Kafka needed: checked before connecting)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.errors import ConfigError
from evaluation.datasets import DatasetFormat, ReadOptions, load_dataset
from streamrec.commands.replay import fingerprint, start_position
from tests.support import run_cli, stderr_lines

# lines: 1 header, 2-4 events out of time order, 5 blank, 6 bad, 7 event
SESSIONS = (
    "SessionId\tItemId\tTime\n1\ta\t1396437300\n1\tb\t1396437100\n2\tc\t1396437200\n"
    "\n2\td\tnever\n3\te\t1396437050\n"
)


@pytest.fixture
def sessions(tmp_path: Path) -> Path:
    path = tmp_path / "s.tsv"
    path.write_text(SESSIONS)
    return path


def test_lines_follow_their_events_into_event_time_order(sessions: Path) -> None:
    dataset = load_dataset(sessions, "sessions", ReadOptions(now=1.5e9))
    assert [e.item_id for e in dataset.events] == ["e", "b", "c", "a"]
    assert dataset.lines == [7, 3, 4, 2]
    assert start_position(dataset, 4, 3, 7) == 1
    assert start_position(dataset, 4, 2, 7) == 3


@pytest.mark.parametrize(
    ("line", "count", "message"),
    [
        (8, 4, "beyond the end of the input (7 lines)"),
        (1, 4, "not an event"),  # the header
        (5, 4, "not an event"),  # blank
        (6, 4, "not an event"),  # bad
        (2, 3, "beyond --limit 3"),  # the 4th event in time, cut by --limit 3
    ],
)
def test_lines_that_name_no_event(sessions: Path, line: int, count: int, message: str) -> None:
    dataset = load_dataset(sessions, "sessions", ReadOptions(now=1.5e9))
    with pytest.raises(ConfigError, match=re.escape(message)):
        start_position(dataset, count, line, 7)


def test_fingerprint_is_the_content_and_format(tmp_path: Path, sessions: Path) -> None:
    digest, lines = fingerprint(sessions, DatasetFormat.SESSIONS)
    assert lines == 7
    moved = tmp_path / "elsewhere.tsv"
    moved.write_text(SESSIONS)
    assert fingerprint(moved, DatasetFormat.SESSIONS) == (digest, 7)
    assert fingerprint(moved, DatasetFormat.JSONL)[0] != digest
    moved.write_text(SESSIONS + "4\tf\t1396437060")  # a last line without its newline counts
    assert fingerprint(moved, DatasetFormat.SESSIONS)[1] == 8
    assert fingerprint(tmp_path, DatasetFormat.MOVIELENS)[1] is None  # a directory


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--from-line", "0"), "Invalid value for '--from-line'"),
        (("--from-line", "-3"), "Invalid value for '--from-line'"),
        (("--from-line", "x"), "Invalid value for '--from-line'"),
        (("--from-line", "99"), "--from-line 99 is beyond the end of the input (7 lines)"),
        (("--from-line", "1"), "--from-line 1: that line is not an event"),
        (("--from-line", "2", "--limit", "3"), "that event is beyond --limit 3"),
    ],
)
def test_bad_from_line_is_one_line_and_non_zero(
    sessions: Path, args: tuple[str, ...], expected: str
) -> None:
    env = {"STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1", "STREAMREC_NETWORK_TIMEOUT_S": "1"}
    result = run_cli("replay", "-f", "sessions", str(sessions), *args, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in stderr_lines(result) if not line.startswith(str(sessions))]
    assert len(lines) == 1, result.stderr  # besides the bad-line report of line 6
    assert lines[0].startswith("streamrec: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
