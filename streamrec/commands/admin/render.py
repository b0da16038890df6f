"""Output helpers of ``streamrec admin``: JSON of proto messages, one-line version summaries."""

from __future__ import annotations

import json
from typing import Any

import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from schemas import recommender_pb2 as pb

__all__ = ["AsJson", "Reason", "as_dict", "echo_json", "version_line"]

AsJson = typer.Option("--json", help="Print JSON instead of text.")
Reason = typer.Option("--reason", help="Why (recorded in the version and the audit trail).")


def as_dict(message: Message) -> dict[str, Any]:
    """A proto message as a JSON-ready dict (field names as in the .proto, defaults kept)."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, sort_keys=True))


def version_line(version: pb.ConfigVersionInfo) -> str:
    """``v12  2026-…Z  ada  set_config  config  ranker_… — reason (3 changes)``."""
    kinds = ",".join(version.kinds) or "-"
    target = f"  {version.target}" if version.target else ""
    reason = f"  — {version.reason}" if version.reason else ""
    return (
        f"v{version.version:<4} {version.ts}  {version.author}  {version.action}  {kinds}"
        f"{target}{reason} ({len(version.diff)} changes)"
    )


def change_line(change: pb.ConfigChange) -> str:
    old = change.old_json or "(absent)"
    new = change.new_json or "(absent)"
    return f"{change.path}: {old} -> {new}"
