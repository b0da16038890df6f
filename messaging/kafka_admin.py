"""Kafka topic administration for one deployment: create, inspect, delete, end offsets.

Topic layout comes from :mod:`schemas.topics`: every logical topic under
``Settings.topic_prefix``; the items topic compacted; the alerts topic one partition; the
others ``Settings.partitions``. Every network call has a timeout (``network_timeout_s``);
an unreachable broker raises :class:`~core.errors.UnavailableError`, a request the
broker rejects raises :class:`~core.errors.ConfigError` (bad request) or
``UnavailableError`` (anything else).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, for_code

from core import kafka_clients
from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from schemas.topics import TOPIC_SPECS, Topic

T = TypeVar("T")

CLIENT_ID = "streamrec-admin"
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
# Broker error codes that mean "your request is wrong", not "the broker is unwell".
_BAD_REQUEST = {17, 37, 38, 39, 40, 42, 44}  # invalid topic/partitions/rf/assignment/config…


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """One topic as this deployment wants it."""

    topic: Topic
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """One topic as the broker has it."""

    name: str
    partitions: int
    cleanup_policy: str


#: Broker-side message size limit of our topics (the worker's own limit is max_event_bytes).
TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def topic_plan(settings: Settings, partitions: int | None = None) -> list[TopicPlan]:
    """The topics of this deployment with their partitions and configs."""
    if partitions is not None and partitions < 1:
        raise ConfigError(f"partitions must be >= 1, got {partitions}")
    count = partitions or settings.partitions
    plans = []
    for topic, spec in TOPIC_SPECS.items():
        configs = {"cleanup.policy": "compact"} if spec.compacted else {}
        # Accept oversized messages on the wire, so the worker can dead-letter them with a
        # reason instead of the producer failing silently on the broker's 1 MB default.
        configs["max.message.bytes"] = str(TOPIC_MAX_MESSAGE_BYTES)
        plans.append(
            TopicPlan(
                topic=topic,
                name=settings.topic(topic.value),
                partitions=1 if spec.single_partition else count,
                configs=configs,
            )
        )
    return plans


async def kafka_call(settings: Settings, what: str, awaitable: Awaitable[T]) -> T:
    """Await one Kafka call within ``network_timeout_s``; failures become UnavailableError."""
    timeout = settings.network_timeout_s
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError as exc:
        raise UnavailableError(
            f"Kafka at {settings.kafka_bootstrap}: {what} timed out after {timeout:g}s"
        ) from exc
    except (KafkaError, OSError) as exc:
        raise UnavailableError(
            f"Kafka at {settings.kafka_bootstrap}: {what} failed: {str(exc) or type(exc).__name__}"
        ) from exc


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[Any]:
    """A started ``AIOKafkaAdminClient``, closed on exit."""
    client = kafka_clients.admin(settings, client_id=CLIENT_ID)
    try:
        await kafka_call(settings, "connect", client.start())
        yield client
    finally:
        await kafka_clients.close(client, settings)


def _raise_for(code: int, topic: str, message: str | None, what: str) -> None:
    error = for_code(code).__name__
    detail = f"{what} {topic}: {error}" + (f" ({message})" if message else "")
    if code in _BAD_REQUEST:
        raise ConfigError(detail)
    raise UnavailableError(detail)


async def _existing(settings: Settings, admin: Any) -> set[str]:
    return set(await kafka_call(settings, "list topics", admin.list_topics()))


async def create_topics(
    settings: Settings, partitions: int | None = None, *, ready_timeout_s: float = 30.0
) -> list[TopicPlan]:
    """Create the missing topics of this deployment (idempotent); return those created.

    Waits until every topic of the deployment has a leader for each partition, so producers
    and consumers can use them right away.
    """
    plans = topic_plan(settings, partitions)
    async with admin_client(settings) as admin:
        existing = await _existing(settings, admin)
        todo = [plan for plan in plans if plan.name not in existing]
        if todo:
            new = [NewTopic(p.name, p.partitions, 1, topic_configs=p.configs) for p in todo]
            response = await kafka_call(settings, "create topics", admin.create_topics(new))
            for result in response.topic_errors:
                name, code = result[0], result[1]
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    _raise_for(code, name, result[2] if len(result) > 2 else None, "create")
        await _wait_for_leaders(settings, admin, [plan.name for plan in plans], ready_timeout_s)
    return todo


async def _wait_for_leaders(
    settings: Settings, admin: Any, names: list[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        described = await kafka_call(settings, "describe topics", admin.describe_topics(names))
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if time.monotonic() >= deadline:
            waiting = ", ".join(sorted(set(names) - ready))
            raise UnavailableError(f"topics have no leader after {timeout_s:g}s: {waiting}")
        await asyncio.sleep(0.1)


async def missing_topics(settings: Settings) -> list[str]:
    """Names of this deployment's topics that do not exist."""
    async with admin_client(settings) as admin:
        existing = await _existing(settings, admin)
    return [plan.name for plan in topic_plan(settings) if plan.name not in existing]


async def describe_topics(settings: Settings) -> list[TopicInfo]:
    """Partitions and cleanup policy of this deployment's existing topics."""
    names = [plan.name for plan in topic_plan(settings)]
    async with admin_client(settings) as admin:
        existing = await _existing(settings, admin)
        present = [name for name in names if name in existing]
        if not present:
            return []
        described = await kafka_call(settings, "describe topics", admin.describe_topics(present))
        resources = [
            ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None})
            for name in present
        ]
        responses = await kafka_call(
            settings, "describe configs", admin.describe_configs(resources)
        )
    policies: dict[str, str] = {}
    for response in responses:
        for _code, _message, _type, name, entries, *_ in response.resources:
            for entry in entries:
                if entry[0] == "cleanup.policy":
                    policies[name] = str(entry[1])
    counts = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    return [
        TopicInfo(name=name, partitions=counts[name], cleanup_policy=policies.get(name, "?"))
        for name in present
        if name in counts
    ]


async def delete_topics(settings: Settings, *, gone_timeout_s: float = 30.0) -> list[str]:
    """Delete this deployment's topics (those that exist); return the names deleted.

    Returns once the broker's metadata no longer lists them (the controller accepts the
    deletion before every broker has applied it), so a ``missing_topics`` or a
    ``create_topics`` right after sees them gone; UnavailableError after ``gone_timeout_s``.
    """
    names = [plan.name for plan in topic_plan(settings)]
    async with admin_client(settings) as admin:
        present = sorted(set(names) & await _existing(settings, admin))
        if not present:
            return []
        response = await kafka_call(settings, "delete topics", admin.delete_topics(present))
        for name, code, *rest in response.topic_error_codes:
            if code not in (0, _UNKNOWN_TOPIC):
                _raise_for(code, name, rest[0] if rest else None, "delete")
        deadline = time.monotonic() + gone_timeout_s
        while remaining := set(present) & await _existing(settings, admin):
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"topics still listed {gone_timeout_s:.0f} s after their deletion: "
                    f"{', '.join(sorted(remaining))}"
                )
            await asyncio.sleep(0.1)
    return present


async def end_offsets(
    settings: Settings, topics: Iterable[str] | None = None
) -> dict[tuple[str, int], int]:
    """End offset of every partition of ``topics`` (default: this deployment's topics)."""
    names = list(topics) if topics is not None else [p.name for p in topic_plan(settings)]
    async with admin_client(settings) as admin:
        described = await kafka_call(settings, "describe topics", admin.describe_topics(names))
    partitions = []
    for topic in described:
        if topic["error_code"] != 0:
            _raise_for(topic["error_code"], topic["topic"], None, "describe")
        partitions += [TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]]
    consumer = kafka_clients.consumer(settings, client_id=CLIENT_ID)
    try:
        await kafka_call(settings, "connect", consumer.start())
        offsets = await kafka_call(settings, "end offsets", consumer.end_offsets(partitions))
    finally:
        await kafka_clients.close(consumer, settings)
    return {(tp.topic, tp.partition): int(offset) for tp, offset in offsets.items()}
