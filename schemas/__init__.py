"""Contracts of streamrec: events, topics, the Redis keyspace and the gRPC API."""

from schemas.events import (
    Alert,
    Context,
    DeadLetter,
    EventType,
    ExposedItem,
    Exposure,
    Item,
    Outcome,
    encode_event,
)
from schemas.keyspace import Keyspace, segment_id
from schemas.topics import Topic, topic_name

__all__ = [
    "Alert",
    "Context",
    "DeadLetter",
    "EventType",
    "ExposedItem",
    "Exposure",
    "Item",
    "Keyspace",
    "Outcome",
    "Topic",
    "encode_event",
    "segment_id",
    "topic_name",
]
