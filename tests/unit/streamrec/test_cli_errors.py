"""Bad command lines: one ``streamrec: error: …`` line on stderr, no traceback, non-zero exit."""

from __future__ import annotations

import pytest

from tests.support import run_cli, stderr_lines


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--no-such-option",), "No such option: --no-such-option"),
        (("no-such-command",), "No such command 'no-such-command'"),
        (("stack", "up", "--bogus"), "No such option: --bogus"),
        (("stack", "teleport"), "No such command 'teleport'"),
        (("stack", "up", "--timeout", "0"), "Invalid value for '--timeout'"),
        (("stack", "up", "--timeout", "soon"), "Invalid value for '--timeout'"),
        (("topics", "create", "--partitions", "0"), "Invalid value for '--partitions'"),
    ],
)
def test_bad_arguments_give_one_line(args: tuple[str, ...], expected: str) -> None:
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrec: error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_kafka_is_one_line() -> None:
    result = run_cli(
        "topics",
        "list",
        env={"STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1", "STREAMREC_NETWORK_TIMEOUT_S": "2"},
        timeout=60,
    )
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrec: error: Kafka at 127.0.0.1:1")


def test_group_without_command_shows_help() -> None:
    result = run_cli("stack", timeout=60)
    assert result.returncode == 2
    for command in ("up", "down", "status", "fetch"):
        assert command in result.stdout
