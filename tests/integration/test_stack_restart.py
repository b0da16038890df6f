"""LocalStack restarts single services mid-test (the API reliability tests build on)."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from redis.asyncio import Redis

from core import kafka_clients
from core.settings import Settings
from messaging import kafka_admin
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.stack.local import LocalStack


async def _produce(settings: Settings, values: list[bytes]) -> int:
    producer = kafka_clients.producer(
        settings, client_id="streamrec-test", request_timeout_s=20, acks="all"
    )
    await asyncio.wait_for(producer.start(), 20)
    try:
        partitions = {
            (await asyncio.wait_for(producer.send_and_wait(
                settings.topic(Topic.OUTCOMES), value, b"user-1"), 20)).partition
            for value in values
        }  # fmt: skip
    finally:
        await asyncio.wait_for(producer.stop(), 20)
    assert len(partitions) == 1
    return int(partitions.pop())


async def _read_all(settings: Settings, partition: int, count: int) -> list[bytes]:
    tp = TopicPartition(settings.topic(Topic.OUTCOMES), partition)
    consumer = kafka_clients.consumer(settings, client_id="streamrec-test", request_timeout_s=20)
    await asyncio.wait_for(consumer.start(), 20)
    try:
        consumer.assign([tp])
        await asyncio.wait_for(consumer.seek_to_beginning(tp), 20)
        return [(await asyncio.wait_for(consumer.getone(), 20)).value for _ in range(count)]
    finally:
        await asyncio.wait_for(consumer.stop(), 20)


async def test_kafka_killed_and_restarted_keeps_acknowledged_records(
    private_stack: LocalStack, private_settings: Settings
) -> None:
    partition = await _produce(private_settings, [b"a", b"b"])
    old_pid = private_stack.service("kafka").pid
    assert await asyncio.to_thread(private_stack.stop_kafka, graceful=False)
    assert not private_stack.service("kafka").running
    await asyncio.to_thread(private_stack.start_kafka)
    state = private_stack.service("kafka")
    assert state.running and state.pid not in (None, old_pid)
    assert await _produce(private_settings, [b"c"]) == partition
    assert await _read_all(private_settings, partition, 3) == [b"a", b"b", b"c"]
    assert sum((await kafka_admin.end_offsets(private_settings)).values()) == 3


async def test_redis_restart_with_and_without_persistence(
    private_stack: LocalStack, private_settings: Settings
) -> None:
    key = Keyspace(private_settings.key_prefix).meta

    async def write_restart_read(persistence: bool) -> bytes | None:
        client = Redis.from_url(private_settings.redis_url, socket_timeout=5.0)
        try:
            await client.set(key, b"kept")
            await asyncio.to_thread(private_stack.stop_redis)
            private_stack.redis_persistence = persistence
            await asyncio.to_thread(private_stack.start_redis)
        finally:
            await client.aclose()
        client = Redis.from_url(private_settings.redis_url, socket_timeout=5.0)
        try:
            value = await client.get(key)
            assert value is None or isinstance(value, bytes)
            return value
        finally:
            await client.aclose()

    assert await write_restart_read(persistence=False) is None  # no persistence: state is gone
    await asyncio.to_thread(private_stack.stop_redis)
    private_stack.redis_persistence = True
    await asyncio.to_thread(private_stack.start_redis)
    assert await write_restart_read(persistence=True) == b"kept"
