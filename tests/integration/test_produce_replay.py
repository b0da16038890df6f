"""``streamrec produce``, ``replay`` and ``export`` against a real Kafka, through the CLI."""

from __future__ import annotations

import asyncio
import io
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import TopicPartition

from core import kafka_clients
from core.settings import Settings
from messaging import kafka_admin
from messaging.producer import EventProducer
from schemas.events import Outcome, encode_event
from schemas.topics import Topic
from streamrec.commands.export import export_topic
from tests.support import RunCli

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
RSC15 = SHARED / "rsc15-100k" / "yoochoose-clicks-100k_train_full.txt"
OUTCOME = {"user_id": "u1", "item_id": "i1", "event_type": "view", "ts": "2024-04-30T00:00:00Z"}


async def cli(run_cli: RunCli, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"STREAMREC_TOPIC_PREFIX": settings.topic_prefix}
    return await asyncio.to_thread(run_cli, *args, env=env, timeout=240.0)


async def count(settings: Settings, topic: Topic) -> int:
    """Sum of end offsets: the record count of a topic no transaction wrote to."""
    offsets = await kafka_admin.end_offsets(settings, [settings.topic(topic.value)])
    return sum(offsets.values())


async def records(settings: Settings, topic: Topic) -> int:
    """Records a read-committed reader sees (replay's transactions add a commit marker per
    partition and transaction to the end offsets)."""
    return len(await messages(settings, topic))


async def messages(settings: Settings, topic: Topic) -> list[tuple[int, bytes, bytes]]:
    """Every (partition, key, value) on a topic, partition by partition."""
    name = settings.topic(topic.value)
    end_offsets = await kafka_admin.end_offsets(settings, [name])
    tps = [TopicPartition(t, p) for t, p in sorted(end_offsets)]
    consumer = kafka_clients.consumer(settings, client_id="streamrec-test", group_id=None)
    await asyncio.wait_for(consumer.start(), 10)
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = {tp: end_offsets[(tp.topic, tp.partition)] for tp in tps}
        out: list[tuple[int, bytes, bytes]] = []
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(timeout_ms=500)
                for tp in tps:
                    out += [(tp.partition, m.key, m.value) for m in batch.get(tp, [])]
        return sorted(out, key=lambda m: m[0])
    finally:
        await asyncio.wait_for(consumer.stop(), 10)


async def test_replay_rsc15_produces_all_70278_events(settings: Settings, run_cli: RunCli) -> None:
    assert RSC15.is_file(), f"shared dataset missing: {RSC15}"
    result = await cli(run_cli, settings, "replay", "--format", "sessions", str(RSC15))
    assert result.returncode == 0, result.stderr
    assert "read      70278 events" in result.stdout
    assert f"produced  70278 to {settings.topic('outcomes')}" in result.stdout
    assert "skipped   0" in result.stdout
    assert await records(settings, Topic.OUTCOMES) == 70_278


async def test_replay_small_file_of_each_format(
    settings: Settings, run_cli: RunCli, tmp_path: Path
) -> None:
    (tmp_path / "u.data").write_text(
        "1\t10\t5\t881250949\n2\t20\t4\t881250000\nbroken line\n3\t30\t1\t881250500\n"
    )
    (tmp_path / "s.tsv").write_text(
        "SessionId\tItemId\tTime\n7\tb\t1396437500\n7\ta\t1396437400\n8\tc\tnever\n"
    )
    good = orjson.dumps(OUTCOME).decode()
    (tmp_path / "o.jsonl").write_text(f"{good}\n{{bad\n\n{good}\n")
    runs = [("movielens", "u.data", 3, 1), ("sessions", "s.tsv", 2, 1), ("jsonl", "o.jsonl", 2, 1)]
    total = 0
    for fmt, name, produced, skipped in runs:
        result = await cli(run_cli, settings, "replay", "-f", fmt, str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert f"produced  {produced} to" in result.stdout
        assert f"skipped   {skipped}" in result.stdout
        assert f"{tmp_path / name}:" in result.stderr  # the bad line, with its number
        total += produced
        assert await records(settings, Topic.OUTCOMES) == total
    # session 7 went out in event-time order (a before b) although the file had b first
    seven = [orjson.loads(v) for _, k, v in await messages(settings, Topic.OUTCOMES) if k == b"s7"]
    assert [e["item_id"] for e in seven] == ["a", "b"]


async def test_replay_limit_rate_and_context(
    settings: Settings, run_cli: RunCli, tmp_path: Path
) -> None:
    lines = "".join(f"{u}\t{u * 10}\t3\t{881250000 + u}\n" for u in range(1, 31))
    (tmp_path / "u.data").write_text(lines)
    args = ["--limit", "20", "--rate", "50", "--tenant", "shop", "--surface", "pdp"]
    result = await cli(
        run_cli, settings, "replay", "--format", "movielens", str(tmp_path / "u.data"), *args
    )
    assert result.returncode == 0, result.stderr
    assert "beyond --limit: 10" in result.stdout
    elapsed = float(result.stdout.split("produce ")[1].split(" s")[0])
    assert elapsed >= 0.3  # 20 events at 50/s with a burst of 2: about 0.36 s at least
    events = [orjson.loads(v) for _, _, v in await messages(settings, Topic.OUTCOMES)]
    assert sorted(int(e["user_id"]) for e in events) == list(range(1, 21))  # the earliest 20
    assert all((e["context"]["tenant"], e["context"]["surface"]) == ("shop", "pdp") for e in events)
    assert all(e["event_type"] == "view" and e["value"] == 3.0 for e in events)


async def test_produce_sends_good_lines_keyed_and_reports_bad_ones(
    settings: Settings, run_cli: RunCli, tmp_path: Path
) -> None:
    good = [
        orjson.dumps(OUTCOME),
        orjson.dumps({**OUTCOME, "user_id": "u2", "ts": 1714000000}),
        orjson.dumps({**OUTCOME, "item_id": "i2", "event_type": "click"}),
    ]
    future = datetime(2100, 1, 1, tzinfo=UTC).isoformat()
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b"\n".join([good[0], b"{oops", good[1], orjson.dumps({**OUTCOME, "ts": future}), good[2]])
        + b"\n"
    )
    result = await cli(run_cli, settings, "produce", "outcomes", str(path))
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"{path}:2: not_json: ")
    assert result.stderr.splitlines()[1].startswith(f"{path}:4: future_timestamp: ")
    assert "sent 3, rejected 2" in result.stdout
    sent = await messages(settings, Topic.OUTCOMES)
    assert sorted(v for _, _, v in sent) == sorted(good)  # the bytes as written
    assert all(orjson.loads(v)["user_id"].encode() == k for _, k, v in sent)
    assert len({p for p, k, _ in sent if k == b"u1"}) == 1  # one user, one partition

    exported = tmp_path / "out.jsonl"
    result = await cli(run_cli, settings, "export", "outcomes", str(exported))
    assert result.returncode == 0, result.stderr
    assert sorted(exported.read_bytes().splitlines()) == sorted(good)
    assert "exported 3 messages" in result.stderr


async def test_produce_strict_sends_nothing(
    settings: Settings, run_cli: RunCli, tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "ts": 1714000000}\n{"item_id": "b"}\n')
    result = await cli(run_cli, settings, "produce", "items", str(path), "--strict")
    assert result.returncode == 1
    assert f"{path}:2: invalid: ts: Field required" in result.stderr
    assert await count(settings, Topic.ITEMS) == 0
    path.write_text('{"item_id": "a", "ts": 1714000000}\n')
    result = await cli(run_cli, settings, "produce", "items", str(path), "--strict")
    assert result.returncode == 0, result.stderr
    assert [k for _, k, _ in await messages(settings, Topic.ITEMS)] == [b"a"]


async def test_export_snapshot_max_follow_and_bad_values(
    settings: Settings, run_cli: RunCli
) -> None:
    events = [
        Outcome.model_validate({**OUTCOME, "user_id": f"u{n}", "item_id": f"i{n}"})
        for n in range(5)
    ]
    async with EventProducer(settings) as producer:
        for event in events:
            await producer.send_event(Topic.OUTCOMES, event)
        await producer.send_raw(Topic.OUTCOMES, b"\x00not json", b"u1")
        await producer.send_raw(Topic.OUTCOMES, b'{"pretty":\n  "printed"}', b"u1")
    result = await cli(run_cli, settings, "export", "outcomes", "-")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert sorted(lines) == sorted(
        [encode_event(e).decode() for e in events] + ['{"pretty":"printed"}']
    )
    assert "exported 6 messages" in result.stderr
    assert "skipped not_json: 1" in result.stderr

    out = io.BytesIO()
    written = await export_topic(settings, Topic.OUTCOMES, out, max_messages=2)
    assert written.written == 2
    assert len(out.getvalue().splitlines()) == 2
    assert (await export_topic(settings, Topic.EXPOSURES, io.BytesIO())).written == 0

    # --from-end: only what arrives after the start, until --max
    out = io.BytesIO()
    follow = asyncio.create_task(
        export_topic(
            settings, Topic.OUTCOMES, out, from_beginning=False, max_messages=2, timeout_s=30
        )
    )
    async with EventProducer(settings) as producer, asyncio.timeout(60):
        # keep producing until the follower (whose start time we cannot see) has seen two
        while not follow.done():
            await producer.send_event(
                Topic.OUTCOMES, events[0].model_copy(update={"item_id": "new"})
            )
            await producer.flush()
            await asyncio.wait({follow}, timeout=0.5)
    followed = await asyncio.wait_for(follow, 60)
    assert followed.written == 2
    assert all(orjson.loads(line)["item_id"] == "new" for line in out.getvalue().splitlines())

    result = await cli(run_cli, settings, "export", "clicks", "-")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unknown topic 'clicks'" in result.stderr
