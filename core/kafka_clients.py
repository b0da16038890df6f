"""Kafka clients built one way: every aiokafka producer, consumer and admin client of streamrec.

The factories apply what every client of a deployment shares: the bootstrap servers of the
settings, a client id naming the component (``streamrec-…``, as brokers log and quota it) and
the request timeout (``network_timeout_s`` unless the caller passes its own). What differs per
use (acks, linger, topics, group, offset reset …) passes through to aiokafka as keywords.
Consumers do not auto-commit unless asked: streamrec's own readers never commit offsets (the
worker's group consumer is built by faust, see ``streams.faust_tuning``, not here). Consumers
read committed records only (``isolation_level="read_committed"``, as the worker does):
records of an aborted transaction (a replay attempt that failed, see ``messaging.replay``)
are never seen.
:func:`close` stops any of them within a bound, ignoring a broker that is already gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from core.settings import Settings

__all__ = ["admin", "close", "consumer", "producer"]


def _common(settings: Settings, client_id: str, request_timeout_s: float | None) -> dict[str, Any]:
    timeout_s = settings.network_timeout_s if request_timeout_s is None else request_timeout_s
    return {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id,
        "request_timeout_ms": int(timeout_s * 1000),
    }


def producer(
    settings: Settings, *, client_id: str, request_timeout_s: float | None = None, **options: Any
) -> AIOKafkaProducer:
    """A producer (not started) for ``settings``' brokers; ``options`` go to aiokafka."""
    return AIOKafkaProducer(**_common(settings, client_id, request_timeout_s), **options)


def consumer(
    settings: Settings,
    *topics: str,
    client_id: str,
    request_timeout_s: float | None = None,
    **options: Any,
) -> AIOKafkaConsumer:
    """A consumer (not started) subscribed to ``topics`` (none: assign partitions yourself)."""
    options.setdefault("enable_auto_commit", False)
    options.setdefault("isolation_level", "read_committed")
    return AIOKafkaConsumer(*topics, **_common(settings, client_id, request_timeout_s), **options)


def admin(
    settings: Settings, *, client_id: str, request_timeout_s: float | None = None, **options: Any
) -> AIOKafkaAdminClient:
    """An admin client (not started) for ``settings``' brokers."""
    return AIOKafkaAdminClient(**_common(settings, client_id, request_timeout_s), **options)


async def close(client: Any, settings: Settings) -> None:
    """Stop a client of this module within ``network_timeout_s`` (``None``: nothing to stop);
    a broker that is gone leaves nothing to release, so its errors are ignored."""
    if client is None:
        return
    stop = client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop()
    with contextlib.suppress(TimeoutError, KafkaError, OSError):
        await asyncio.wait_for(stop, settings.network_timeout_s)
