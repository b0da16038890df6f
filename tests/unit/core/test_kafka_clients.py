"""core.kafka_clients: every client gets the settings' brokers, a client id and the timeout."""

from __future__ import annotations

from typing import Any

from core import kafka_clients
from core.settings import Settings

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1,127.0.0.1:2", network_timeout_s=1.5)


def _client_of(client: Any) -> Any:
    """aiokafka's network client inside a producer, consumer or admin client."""
    return getattr(client, "_client", None) or client.client


async def test_every_factory_applies_the_settings() -> None:
    made = [
        kafka_clients.producer(SETTINGS, client_id="streamrec-a"),
        kafka_clients.consumer(SETTINGS, client_id="streamrec-a"),
        kafka_clients.admin(SETTINGS, client_id="streamrec-a"),
    ]
    try:
        for client in made:
            inner = _client_of(client)
            assert inner._bootstrap_servers == SETTINGS.kafka_bootstrap
            assert inner._client_id == "streamrec-a"
            assert inner._request_timeout_ms == 1500
    finally:
        for client in made:
            await kafka_clients.close(client, SETTINGS)


async def test_per_use_options_and_timeout() -> None:
    producer = kafka_clients.producer(
        SETTINGS, client_id="streamrec-b", request_timeout_s=4.5, max_request_size=2048
    )
    consumer = kafka_clients.consumer(
        SETTINGS, "t1", client_id="streamrec-b", auto_offset_reset="earliest"
    )
    try:
        assert _client_of(producer)._request_timeout_ms == 4500
        assert producer._max_request_size == 2048
        assert consumer.subscription() == {"t1"}
        assert consumer._enable_auto_commit is False  # streamrec's readers never commit
        assert consumer._isolation_level == "read_committed"  # no aborted replay records
        committing = kafka_clients.consumer(
            SETTINGS, client_id="streamrec-b", group_id="g", enable_auto_commit=True
        )
        assert committing._enable_auto_commit is True
        await kafka_clients.close(committing, SETTINGS)
    finally:
        await kafka_clients.close(producer, SETTINGS)
        await kafka_clients.close(consumer, SETTINGS)


async def test_close_accepts_none_and_unstarted_clients() -> None:
    await kafka_clients.close(None, SETTINGS)
    await kafka_clients.close(kafka_clients.admin(SETTINGS, client_id="streamrec-c"), SETTINGS)
