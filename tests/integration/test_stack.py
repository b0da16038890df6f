"""The shared fixtures give a real Kafka and a real Redis; topic admin works against them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from redis.asyncio import Redis

from core import kafka_clients
from core.errors import ConfigError, UnavailableError
from core.settings import Settings, load_settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from tests.support import RunCli, delete_prefix_keys


async def test_produce_and_consume_on_the_real_broker(settings: Settings) -> None:
    topic = settings.topic(Topic.OUTCOMES)
    producer = kafka_clients.producer(settings, client_id="streamrec-test", acks="all")
    await asyncio.wait_for(producer.start(), 10)
    try:
        sent = [
            await asyncio.wait_for(producer.send_and_wait(topic, f"v{i}".encode(), b"user-1"), 10)
            for i in range(3)
        ]
    finally:
        await asyncio.wait_for(producer.stop(), 10)
    assert len({meta.partition for meta in sent}) == 1  # one key → one partition, in order
    partition = TopicPartition(topic, sent[0].partition)

    consumer = kafka_clients.consumer(settings, client_id="streamrec-test")
    await asyncio.wait_for(consumer.start(), 10)
    try:
        consumer.assign([partition])
        await asyncio.wait_for(consumer.seek_to_beginning(partition), 10)
        values = [(await asyncio.wait_for(consumer.getone(), 10)).value for _ in range(3)]
    finally:
        await asyncio.wait_for(consumer.stop(), 10)
    assert values == [b"v0", b"v1", b"v2"]

    offsets = await kafka_admin.end_offsets(settings, [topic])
    assert offsets[(topic, partition.partition)] == 3
    assert sum(offsets.values()) == 3


async def test_write_and_read_real_redis(settings: Settings, redis: Redis) -> None:
    keys = Keyspace(settings.key_prefix)
    await redis.hset(keys.meta, mapping={"t0": "1700000000"})
    await redis.zadd(keys.popularity(), {"item-1": 2.5, "item-2": 1.0})
    assert await redis.hget(keys.meta, "t0") == b"1700000000"
    assert await redis.zrevrange(keys.popularity(), 0, -1) == [b"item-1", b"item-2"]
    assert await redis.ping()


async def test_prefix_cleanup_deletes_only_that_prefix(redis_url: str, redis: Redis) -> None:
    mine, other = Keyspace(f"c{uuid.uuid4().hex[:8]}"), Keyspace(f"c{uuid.uuid4().hex[:8]}")
    for index in range(1200):  # more than one SCAN page and one UNLINK batch
        await redis.set(mine.covis(f"i{index}"), "1")
    await redis.set(other.meta, "keep")
    try:
        assert await delete_prefix_keys(redis_url, mine.prefix) == 1200
        assert [key async for key in redis.scan_iter(match=mine.pattern)] == []
        assert await redis.get(other.meta) == b"keep"
    finally:
        await delete_prefix_keys(redis_url, other.prefix)


async def test_settings_fixture_created_every_topic(settings: Settings) -> None:
    assert await kafka_admin.missing_topics(settings) == []
    infos = {info.name: info for info in await kafka_admin.describe_topics(settings)}
    assert set(infos) == {settings.topic(topic) for topic in Topic}
    assert infos[settings.topic(Topic.ITEMS)].cleanup_policy == "compact"
    assert infos[settings.topic(Topic.OUTCOMES)].cleanup_policy == "delete"
    assert infos[settings.topic(Topic.ALERTS)].partitions == 1
    assert infos[settings.topic(Topic.EXPOSURES)].partitions == settings.partitions


async def test_topics_create_cli_is_idempotent(kafka_bootstrap: str, run_cli: RunCli) -> None:
    prefix = f"cli{uuid.uuid4().hex[:8]}"
    env = {"STREAMREC_KAFKA_BOOTSTRAP": kafka_bootstrap, "STREAMREC_TOPIC_PREFIX": prefix}
    own = load_settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=3)
    try:
        listed = await asyncio.to_thread(run_cli, "topics", "list", env=env)
        assert listed.returncode == 1
        assert listed.stdout.count("missing ") == 5

        first = await asyncio.to_thread(run_cli, "topics", "create", "--partitions", "3", env=env)
        assert first.returncode == 0, first.stderr
        assert first.stdout.count("created ") == 5
        infos = {info.name: info for info in await kafka_admin.describe_topics(own)}
        assert len(infos) == 5
        assert infos[f"{prefix}.outcomes"].partitions == 3
        assert infos[f"{prefix}.alerts"].partitions == 1
        assert infos[f"{prefix}.items"].cleanup_policy == "compact"

        second = await asyncio.to_thread(run_cli, "topics", "create", env=env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("exists ") == 5
        assert "created" not in second.stdout

        listed = await asyncio.to_thread(run_cli, "topics", "list", env=env)
        assert listed.returncode == 0
        assert "missing" not in listed.stdout
    finally:
        await kafka_admin.delete_topics(own)
    assert sorted(await kafka_admin.missing_topics(own)) == sorted(
        own.topic(topic) for topic in Topic
    )


async def test_admin_errors_are_typed(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="partitions"):
        await kafka_admin.create_topics(settings, partitions=0)
    unreachable = load_settings(kafka_bootstrap="127.0.0.1:1", network_timeout_s=2.0)
    with pytest.raises(UnavailableError, match=r"127\.0\.0\.1:1"):
        await kafka_admin.missing_topics(unreachable)
