"""``streamrec produce`` without Kafka: local validation, line numbers, keys, exit codes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from schemas.topics import Topic
from streamrec.commands.produce import command, validate_lines

NOW = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
OUTCOME = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2024-04-30T00:00:00Z"}


def check(lines: list[bytes], topic: Topic = Topic.OUTCOMES):  # type: ignore[no-untyped-def]
    return validate_lines(lines, topic, max_bytes=4096, max_future_skew_s=300, now=NOW)


def test_good_lines_keep_raw_bytes_and_key() -> None:
    raw = orjson.dumps(OUTCOME)
    result = check([raw + b"\r\n", b"\n", orjson.dumps({**OUTCOME, "user_id": "u2"}) + b"\n"])
    assert result.bad == []
    assert result.good == [(1, b"u1", raw), (3, b"u2", orjson.dumps({**OUTCOME, "user_id": "u2"}))]


def test_items_are_keyed_by_item_id() -> None:
    result = check([b'{"item_id": "sku-1", "ts": 1714000000}'], Topic.ITEMS)
    assert [(n, key) for n, key, _ in result.good] == [(1, b"sku-1")]


def test_bad_lines_have_numbers_and_reasons() -> None:
    result = check(
        [
            b"{oops\n",
            orjson.dumps(OUTCOME) + b"\n",
            orjson.dumps({**OUTCOME, "ts": NOW + 3600}) + b"\n",
            orjson.dumps({**OUTCOME, "x": 1}) + b"\n",
            orjson.dumps({**OUTCOME, "item_id": "z" * 5000}) + b"\n",
            b"[1, 2]\n",
        ]
    )
    assert [n for n, _, _ in result.good] == [2]
    assert [(b.line, b.reason) for b in result.bad] == [
        (1, "not_json"),
        (3, "future_timestamp"),
        (4, "invalid"),
        (5, "oversized"),
        (6, "not_object"),
    ]


def app() -> typer.Typer:
    root = typer.Typer()
    root.command("produce")(command)
    root.command("noop")(lambda: None)  # two commands: keep "produce" as a sub-command
    return root


@pytest.fixture
def unreachable_kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point settings at a closed port: these runs must not need Kafka at all."""
    from core.settings import settings

    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("STREAMREC_NETWORK_TIMEOUT_S", "1")
    settings.cache_clear()
    yield
    settings.cache_clear()


@pytest.mark.usefixtures("unreachable_kafka")
def test_strict_sends_nothing_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(OUTCOME) + b"\nnot json\n")
    result = CliRunner().invoke(app(), ["produce", "outcomes", str(path), "--strict"])
    assert result.exit_code == 1, result.output
    assert f"{path}:2: not_json: " in result.stderr
    assert "sent 0, rejected 1" in result.stdout


@pytest.mark.usefixtures("unreachable_kafka")
def test_only_bad_lines_from_stdin(tmp_path: Path) -> None:
    result = CliRunner().invoke(app(), ["produce", "items", "-"], input='{"item_id": ""}\n')
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("<stdin>:1: invalid: ")
    assert "sent 0, rejected 1" in result.stdout


@pytest.mark.usefixtures("unreachable_kafka")
def test_unreachable_kafka_fails_when_there_is_something_to_send(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(OUTCOME) + b"\n")
    result = CliRunner().invoke(app(), ["produce", "outcomes", str(path)])
    assert result.exit_code != 0
    assert "did not answer" in str(result.exception)


def test_bad_topic_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app(), ["produce", "deadletter", "-"], input="")
    assert result.exit_code == 2


def test_pii_and_duplicate_keys_are_refused_like_the_worker_does() -> None:
    from schemas.ids import Pseudonyms

    lines = [
        orjson.dumps({**OUTCOME, "user_id": "jane@example.com"}),
        orjson.dumps(OUTCOME)[:-1] + b',"user_id":"u9"}',
        orjson.dumps(OUTCOME),
    ]
    result = validate_lines(
        lines,
        Topic.OUTCOMES,
        max_bytes=4096,
        max_future_skew_s=300,
        now=NOW,
        pseudonyms=Pseudonyms(),
    )
    assert [(bad.line, bad.reason) for bad in result.bad] == [(1, "pii"), (2, "duplicate_key")]
    assert [n for n, _, _ in result.good] == [3]
