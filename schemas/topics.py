"""Kafka topic contract: logical topics, their keys, cleanup policy and partitioning."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    OUTCOMES = "outcomes"
    EXPOSURES = "exposures"
    ITEMS = "items"
    DEADLETTER = "deadletter"
    ALERTS = "alerts"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    topic: Topic
    key: str
    compacted: bool
    single_partition: bool
    description: str


TOPIC_SPECS: dict[Topic, TopicSpec] = {
    Topic.OUTCOMES: TopicSpec(Topic.OUTCOMES, "user_id", False, False, "outcome.v1 events"),
    Topic.EXPOSURES: TopicSpec(Topic.EXPOSURES, "user_id", False, False, "exposure.v1 events"),
    Topic.ITEMS: TopicSpec(Topic.ITEMS, "item_id", True, False, "item.v1 catalog (compacted)"),
    Topic.DEADLETTER: TopicSpec(
        Topic.DEADLETTER, "source key", False, False, "dead-letter envelopes"
    ),
    Topic.ALERTS: TopicSpec(Topic.ALERTS, "alert_id", False, True, "alert.v1 events"),
}


def topic_name(prefix: str, topic: Topic) -> str:
    """Physical topic name under a prefix."""
    return f"{prefix}.{topic.value}"
