"""``streamrec replay`` across a broker restart, then ``--from-line``: each line exactly once.

Against a Kafka of the test's own (``private_stack``), restarted while the replay CLI runs.
The topic is then read from the start by a read-committed consumer (the worker's isolation
level) and compared with the input: every event line once, with its key and its bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from redis.asyncio import Redis

from core import kafka_clients
from core.errors import UnavailableError
from core.settings import Settings
from evaluation.datasets import ReadOptions, load_dataset
from messaging import kafka_admin
from messaging.producer import EventProducer, message_key
from messaging.replay import TransactionalReplay
from monitoring.monitor_io import OffsetsProbe
from schemas.events import Outcome, encode_event
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.stack.local import LocalStack
from tests.support import run_cli
from tests.worker_support import outcome, start_worker, stop_worker

LINES = 12_000
RATE = "2000"  # events/s: the replay runs ~6 s, a commit each second
BASE_TS = 1_700_000_000
RESUME = re.compile(r"^replay: gave up after .*: resume with --from-line (\d+)$")


def write_sessions(path: Path, lines: int = LINES) -> Path:
    """A sessions log out of time order (two interleaved halves), each line a unique item."""
    rows = ["SessionId\tItemId\tTime"]
    for i in range(lines):
        ts = BASE_TS + (i // 2 if i % 2 == 0 else lines + i // 2)
        rows.append(f"{i % 97}\titem-{i}\t{ts}")
    path.write_text("\n".join(rows) + "\n")
    return path


def expected(path: Path, fmt: str) -> Counter[tuple[bytes, bytes]]:
    dataset = load_dataset(path, fmt, ReadOptions())
    assert not dataset.bad
    return Counter((message_key(Topic.OUTCOMES, e), encode_event(e)) for e in dataset.events)


async def committed_records(settings: Settings) -> Counter[tuple[bytes, bytes]]:
    """Every record a read-committed reader sees on the outcomes topic, (key, value)."""
    name = settings.topic(Topic.OUTCOMES.value)
    ends = await kafka_admin.end_offsets(settings, [name])
    tps = [TopicPartition(t, p) for t, p in sorted(ends)]
    consumer = kafka_clients.consumer(
        settings, client_id="streamrec-test", request_timeout_s=20, group_id=None
    )
    await asyncio.wait_for(consumer.start(), 20)
    try:
        assert consumer._isolation_level == "read_committed"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: Counter[tuple[bytes, bytes]] = Counter()
        async with asyncio.timeout(60):
            while [
                tp for tp in tps if await consumer.position(tp) < ends[(tp.topic, tp.partition)]
            ]:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    out.update((r.key, r.value) for r in records)
        return out
    finally:
        await asyncio.wait_for(consumer.stop(), 20)


def cli_env(settings: Settings, **settings_env: str) -> dict[str, str]:
    env = {
        "STREAMREC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMREC_TOPIC_PREFIX": settings.topic_prefix,
    }
    env.update({f"STREAMREC_{k.upper()}": v for k, v in settings_env.items()})
    return env


async def replay(
    path: Path, settings: Settings, *args: str, **settings_env: str
) -> subprocess.CompletedProcess[str]:
    env = cli_env(settings, **settings_env)
    return await asyncio.to_thread(
        run_cli, "replay", "-f", "sessions", str(path), *args, env=env, timeout=300
    )


async def wait_some_committed(settings: Settings, proc: asyncio.Task[object]) -> None:
    """Until the first transaction of the replay is visible (or the replay ended)."""
    name = settings.topic(Topic.OUTCOMES.value)
    async with asyncio.timeout(120):
        while not proc.done():
            with contextlib.suppress(UnavailableError):  # a loaded machine: ask again
                if sum((await kafka_admin.end_offsets(settings, [name])).values()) > 0:
                    return
            await asyncio.sleep(0.2)


def restart_kafka(stack: LocalStack, down_s: float, done: threading.Event) -> None:
    """SIGKILL the broker (in-flight transaction left open), wait, start it again."""
    stack.stop_kafka(graceful=False)
    done.wait(down_s)
    stack.start_kafka()


@pytest.mark.timeout(600)
async def test_replay_gives_up_on_a_broker_away_and_from_line_completes_it(
    private_stack: LocalStack, private_settings: Settings, tmp_path: Path
) -> None:
    path = write_sessions(tmp_path / "clicks.tsv")
    bounds = {
        "network_timeout_s": "2",
        "replay_retry_attempts": "3",
        "replay_retry_deadline_s": "30",
        "replay_retry_max_s": "1",
    }
    running = asyncio.create_task(replay(path, private_settings, "--rate", RATE, **bounds))
    await wait_some_committed(private_settings, running)
    assert not running.done(), running.result()
    # the broker is away for longer than the retries last: the replay must give up
    await asyncio.to_thread(private_stack.stop_kafka, graceful=False)
    gave_up = await running
    assert gave_up.returncode == 1, gave_up.stderr
    last = gave_up.stderr.strip().splitlines()[-1]
    match = RESUME.match(last)
    assert match, gave_up.stderr
    line = int(match.group(1))
    assert 2 <= line <= LINES + 1
    assert "Traceback" not in gave_up.stderr

    await asyncio.to_thread(private_stack.start_kafka)
    resumed = await replay(path, private_settings, "--from-line", str(line), **bounds)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed   from line" in resumed.stdout

    got, want = await committed_records(private_settings), expected(path, "sessions")
    assert sum(got.values()) == LINES
    assert got == want  # each line's record once: same keys, same bytes, no duplicate


@pytest.mark.timeout(600)
async def test_replay_retries_through_a_broker_restart(
    private_stack: LocalStack, private_settings: Settings, tmp_path: Path
) -> None:
    path = write_sessions(tmp_path / "clicks.tsv")
    # bounds wide enough for a broker restart on a loaded machine
    bounds = {
        "network_timeout_s": "2",
        "replay_retry_attempts": "40",
        "replay_retry_deadline_s": "240",
        "replay_retry_max_s": "2",
    }
    running = asyncio.create_task(replay(path, private_settings, "--rate", RATE, **bounds))
    await wait_some_committed(private_settings, running)
    assert not running.done(), running.result()
    done = threading.Event()
    restart = asyncio.create_task(asyncio.to_thread(restart_kafka, private_stack, 3.0, done))
    result = await running
    done.set()
    await restart
    assert result.returncode == 0, result.stderr
    assert "retrying in" in result.stderr  # it did meet the restart
    assert f"produced  {LINES} to" in result.stdout

    got, want = await committed_records(private_settings), expected(path, "sessions")
    assert sum(got.values()) == LINES
    assert got == want


@pytest.mark.parametrize("fmt", ["movielens", "jsonl"])
async def test_from_line_continues_a_partial_replay_in_every_format(
    private_settings: Settings, tmp_path: Path, fmt: str
) -> None:
    """A replay cut by --limit, then --from-line at the next event in time: the formats
    share the line bookkeeping, so each gives every line once (sessions: the tests above)."""
    count = 40
    if fmt == "movielens":
        path = tmp_path / "u.data"
        rows = [f"{i % 7}\t{i}\t{1 + i % 5}\t{BASE_TS + (i * 37) % count}" for i in range(count)]
    else:
        path = tmp_path / "o.jsonl"
        outcome = {"user_id": "u", "item_id": "i", "event_type": "view"}
        rows = [
            orjson.dumps(outcome | {"user_id": f"u{i % 7}", "item_id": f"i{i}",
                                    "ts": BASE_TS + (i * 37) % count}).decode()
            for i in range(count)
        ]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    env = cli_env(private_settings)
    first = await asyncio.to_thread(
        run_cli, "replay", "-f", fmt, str(path), "--limit", "15", env=env, timeout=120
    )
    assert first.returncode == 0, first.stderr
    dataset = load_dataset(path, fmt, ReadOptions())
    next_line = dataset.lines[15]
    rest = await asyncio.to_thread(
        run_cli, "replay", "-f", fmt, str(path), "--from-line", str(next_line),
        env=env, timeout=120,
    )  # fmt: skip
    assert rest.returncode == 0, rest.stderr
    assert f"produced  {count - 15} to" in rest.stdout
    got, want = await committed_records(private_settings), expected(path, fmt)
    assert sum(got.values()) == count
    assert got == want


async def test_a_caught_up_group_shows_no_lag_after_a_transactional_replay(
    settings: Settings,
) -> None:
    """The worker commits the offset after the last record it applied; the commit marker
    after it is not a message waiting: the lag probe reads past markers-only lags."""
    evs = [
        Outcome.model_validate(
            {"user_id": f"u{i % 5}", "item_id": f"i{i}", "event_type": "view", "ts": 1.7e9 + i}
        )
        for i in range(30)
    ]
    await TransactionalReplay(settings, evs, fingerprint="lag-test").run()
    name = settings.topic(Topic.OUTCOMES.value)
    ends = await kafka_admin.end_offsets(settings, [name])
    tps = [TopicPartition(t, p) for t, p in sorted(ends)]
    reader = kafka_clients.consumer(settings, client_id="streamrec-test", group_id=None)
    await reader.start()
    last: dict[TopicPartition, int] = {}
    try:
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        end = {tp: ends[(tp.topic, tp.partition)] for tp in tps}
        async with asyncio.timeout(30):
            while [tp for tp in tps if await reader.position(tp) < end[tp]]:
                for tp, records in (await reader.getmany(timeout_ms=500)).items():
                    last[tp] = max(r.offset for r in records)
    finally:
        await reader.stop()
    # what faust commits: the offset after the last record applied, i.e. the marker's offset
    group = kafka_clients.consumer(
        settings, client_id="streamrec-test", group_id=settings.consumer_group
    )
    await group.start()
    try:
        group.assign(list(last))
        await group.commit({tp: offset + 1 for tp, offset in last.items()})
    finally:
        await group.stop()
    assert all(ends[(tp.topic, tp.partition)] == last[tp] + 2 for tp in last)  # one marker

    async with OffsetsProbe(settings, topics=(Topic.OUTCOMES,)) as probe:
        sample = await probe.sample()
    assert sample.lags == {("outcomes", tp.partition): 0 for tp in tps}

    async with EventProducer(settings) as producer:  # one real message: a real lag
        await producer.send_event(Topic.OUTCOMES, evs[0])
    async with OffsetsProbe(settings, topics=(Topic.OUTCOMES,)) as probe:
        sample = await probe.sample()
    lagging = {key: lag for key, lag in sample.lags.items() if lag}
    assert len(lagging) == 1  # reported (as an offset distance: marker and record)
    assert next(iter(lagging.values())) in (1, 2)


async def test_the_worker_applies_committed_replay_records_only(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """An aborted transaction (a replay attempt that failed) is on the log, but the worker
    reads committed records only: its events never reach the state."""
    topic = settings.topic(Topic.OUTCOMES.value)
    producer = kafka_clients.producer(
        settings,
        client_id="streamrec-test",
        request_timeout_s=20,
        transactional_id=f"{settings.topic_prefix}-abort-test",
        enable_idempotence=True,
        acks="all",
    )
    await asyncio.wait_for(producer.start(), 20)
    try:
        for kept, prefix in ((False, "aborted"), (True, "kept")):
            await producer.begin_transaction()
            for i in range(3):
                ts = 1.7e9 + i + (10 if kept else 0)
                await producer.send(topic, outcome("u1", f"{prefix}-{i}", ts), key=b"u1")
            await asyncio.wait_for(
                producer.commit_transaction() if kept else producer.abort_transaction(), 20
            )
    finally:
        await asyncio.wait_for(producer.stop(), 20)

    keys = Keyspace(settings.key_prefix)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        recent: list[str] = []
        async with asyncio.timeout(120):
            while len(recent) < 3:
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                raw = await redis.lrange(keys.user_recent("u1"), 0, -1)
                recent = [(r.decode() if isinstance(r, bytes) else r).split("|")[1] for r in raw]
                await asyncio.sleep(0.2)
    finally:
        stop_worker(worker)
    assert recent == ["kept-2", "kept-1", "kept-0"]
