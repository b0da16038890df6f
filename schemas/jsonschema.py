"""JSON Schema (draft 2020-12) export of the event contracts, for producers in any language.

The schemas are generated from the pydantic models in :mod:`schemas.events` (validation
mode, by alias), so the models stay the single source of truth; this module only adds the
``$schema`` dialect, a stable ``$id``, a ``title`` naming the contract version and a
description saying which topic carries it and how it is keyed.

Known, documented differences from the models (the models are stricter):

- ``ts``: the schema checks the RFC 3339 shape (a pattern) and the epoch-seconds range;
  the model also checks the calendar (no 2024-02-30, no hour 25).
- numbers: JSON Schema calls ``1.0`` an integer; the model refuses it for integer fields.
- the worker also rejects payloads over ``max_event_bytes`` and timestamps too far ahead.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import orjson

from schemas.events import EVENT_MODELS
from schemas.topics import TOPIC_SPECS, Topic

__all__ = ["DIALECT", "ID_PREFIX", "TOPIC_OF", "event_json_schema", "export_json_schemas"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "urn:streamrec:schema:"

#: Which topic carries each contract.
TOPIC_OF: dict[str, Topic] = {
    "exposure.v1": Topic.EXPOSURES,
    "outcome.v1": Topic.OUTCOMES,
    "item.v1": Topic.ITEMS,
    "alert.v1": Topic.ALERTS,
    "deadletter.v1": Topic.DEADLETTER,
}


def event_json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of one contract (``outcome.v1`` …); ``KeyError`` for an unknown name."""
    model = EVENT_MODELS[name]
    body = model.model_json_schema(by_alias=True, mode="validation")
    spec = TOPIC_SPECS[TOPIC_OF[name]]
    summary = inspect.cleandoc(model.__doc__ or name)
    description = (
        f"{summary}\n\nCarried on the '{spec.topic.value}' topic (PREFIX.{spec.topic.value}), "
        f"message key: {spec.key}. Unknown fields are rejected; the 'schema' field may be "
        f"omitted on its own topic."
    )
    schema: dict[str, Any] = {
        "$schema": DIALECT,
        "$id": f"{ID_PREFIX}{name}",
        "title": name,
        "description": description,
    }
    schema.update({key: value for key, value in body.items() if key not in schema})
    return schema


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.json`` for every contract into ``directory`` (created); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in EVENT_MODELS:
        path = directory / f"{name}.json"
        data = orjson.dumps(event_json_schema(name), option=orjson.OPT_INDENT_2)
        path.write_bytes(data + b"\n")
        written.append(path)
    return written
