"""Proto ↔ domain translation and request validation for the gRPC adapters (no grpc import).

Validation (any failure raises :class:`InvalidRequest`, which the servicers map to
INVALID_ARGUMENT with its one-line message):

* ``k`` in 1..100; ids non-empty where required and at most 128 characters; exclude / anchor
  lists at most 100 entries; context strings at most 256 characters, ``extra`` at most 26 keys
  (the keys the server writes on the exposure event, ``schemas.controls.SERVER_EXTRA_KEYS``,
  are reserved).
* Recommend: exactly one of ``user_id`` / ``session_id``. SimilarItems: at most one.
* Unknown fields: a request (or nested message) carrying field numbers this server does not
  know is rejected. A newer client asking for something this server cannot do should get an
  error, not a silently different answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from pydantic import ValidationError

from schemas import recommender_pb2 as pb
from schemas.controls import SERVER_EXTRA_KEYS
from schemas.events import MAX_CONTEXT_KEYS, MAX_STR_LEN, Context
from schemas.ids import PiiRefused, Pseudonyms, id_problem
from schemas.rules import AuditEntry, Rule
from serving.ranker import Stage
from serving.recommender import Recommendation

MAX_K = 100
MAX_LIST = 100
RESERVED_EXTRA = SERVER_EXTRA_KEYS
MAX_EXTRA_KEYS = MAX_CONTEXT_KEYS - len(RESERVED_EXTRA)
DEFAULT_TENANT = "default"
DEFAULT_SURFACE = "home"

STAGE_TO_PROTO: dict[Stage, pb.FallbackStage.ValueType] = {
    Stage.NONE: pb.FALLBACK_STAGE_NONE,
    Stage.SEGMENT_POPULARITY: pb.FALLBACK_STAGE_SEGMENT_POPULARITY,
    Stage.GLOBAL_POPULARITY: pb.FALLBACK_STAGE_GLOBAL_POPULARITY,
    Stage.LAST_KNOWN: pb.FALLBACK_STAGE_LAST_KNOWN,
    Stage.KILL_SWITCH: pb.FALLBACK_STAGE_KILL_SWITCH,
}
KIND_TO_PROTO: dict[str, pb.RuleKind.ValueType] = {
    "pin": pb.RULE_KIND_PIN,
    "boost": pb.RULE_KIND_BOOST,
    "block": pb.RULE_KIND_BLOCK,
}
PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}


class InvalidRequest(ValueError):
    """A request the server refuses; the message is one line for the caller."""


@dataclass(frozen=True, slots=True)
class RecommendQuery:
    user_id: str | None
    session_id: str | None
    k: int
    context: Context
    exclude: tuple[str, ...]
    anchors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SimilarQuery:
    item_id: str
    k: int
    context: Context
    exclude: tuple[str, ...]
    user_id: str | None
    session_id: str | None


def reject_unknown_fields(message: Message, path: str = "request") -> None:
    """Raise when ``message`` or any nested message holds unknown fields."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({unknown[i].field_number for i in range(len(unknown))})
        raise InvalidRequest(f"{path} has unknown field number(s) {numbers}")
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        children = value if descriptor.is_repeated else [value]
        for child in children:
            reject_unknown_fields(child, f"{path}.{descriptor.name}")


def _id(value: str, what: str, *, required: bool) -> str | None:
    if not value:
        if required:
            raise InvalidRequest(f"{what} is required")
        return None
    problem = id_problem(value, what)  # whitespace-only, control characters, too long
    if problem is not None:
        raise InvalidRequest(problem)
    return value


def _pseudonymous(value: str | None, what: str, pseudonyms: Pseudonyms | None) -> str | None:
    """``pii_policy`` on a user / session id (see :mod:`schemas.ids`); refusal → InvalidRequest."""
    if value is None or pseudonyms is None:
        return value
    try:
        return pseudonyms.apply(value, what)
    except PiiRefused as exc:
        raise InvalidRequest(str(exc)) from None


def _ids(values: Sequence[str], what: str) -> tuple[str, ...]:
    if len(values) > MAX_LIST:
        raise InvalidRequest(f"{what} has {len(values)} entries (at most {MAX_LIST})")
    for value in values:
        _id(value, f"an entry of {what}", required=True)
    return tuple(values)


def _k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise InvalidRequest(f"k must be between 1 and {MAX_K}, got {k}")
    return k


_PLAIN_CONTEXTS: dict[tuple[str, str, str], Context] = {}  # contexts without extra, reused
_PLAIN_CONTEXTS_MAX = 4096


def parse_context(ctx: pb.Context) -> Context:
    tenant, surface, locale = ctx.tenant, ctx.surface, ctx.locale
    if not ctx.extra:
        known = _PLAIN_CONTEXTS.get((tenant, surface, locale))
        if known is not None:
            return known
    for name, value in (("tenant", tenant), ("surface", surface), ("locale", locale)):
        if len(value) > MAX_STR_LEN:
            raise InvalidRequest(f"context.{name} is longer than {MAX_STR_LEN} characters")
    extra = dict(ctx.extra)
    if len(extra) > MAX_EXTRA_KEYS:
        raise InvalidRequest(f"context.extra has {len(extra)} keys (at most {MAX_EXTRA_KEYS})")
    for key, value in extra.items():
        if key in RESERVED_EXTRA:
            raise InvalidRequest(f"context.extra key {key!r} is reserved")
        if len(key) > MAX_STR_LEN or len(value) > MAX_STR_LEN:
            raise InvalidRequest(f"context.extra entry {key[:40]!r} is too long")
    parsed = Context(
        tenant=tenant or DEFAULT_TENANT,
        surface=surface or DEFAULT_SURFACE,
        locale=locale,
        extra=extra,
    )
    if not extra:
        if len(_PLAIN_CONTEXTS) >= _PLAIN_CONTEXTS_MAX:
            _PLAIN_CONTEXTS.clear()
        _PLAIN_CONTEXTS[tenant, surface, locale] = parsed
    return parsed


def parse_recommend(
    request: pb.RecommendRequest, pseudonyms: Pseudonyms | None = None
) -> RecommendQuery:
    reject_unknown_fields(request)
    user = _pseudonymous(_id(request.user_id, "user_id", required=False), "user_id", pseudonyms)
    session = _pseudonymous(
        _id(request.session_id, "session_id", required=False), "session_id", pseudonyms
    )
    if (user is None) == (session is None):
        raise InvalidRequest("exactly one of user_id or session_id must be set")
    return RecommendQuery(
        user_id=user,
        session_id=session,
        k=_k(request.k),
        context=parse_context(request.context),
        exclude=_ids(request.exclude_item_ids, "exclude_item_ids"),
        anchors=_ids(request.anchor_item_ids, "anchor_item_ids"),
    )


def parse_similar(
    request: pb.SimilarItemsRequest, pseudonyms: Pseudonyms | None = None
) -> SimilarQuery:
    reject_unknown_fields(request)
    item = _id(request.item_id, "item_id", required=True)
    assert item is not None
    user = _pseudonymous(_id(request.user_id, "user_id", required=False), "user_id", pseudonyms)
    session = _pseudonymous(
        _id(request.session_id, "session_id", required=False), "session_id", pseudonyms
    )
    if user is not None and session is not None:
        raise InvalidRequest("at most one of user_id or session_id may be set")
    return SimilarQuery(
        item_id=item,
        k=_k(request.k),
        context=parse_context(request.context),
        exclude=_ids(request.exclude_item_ids, "exclude_item_ids"),
        user_id=user,
        session_id=session,
    )


def to_response(rec: Recommendation) -> pb.RecommendResponse:
    response = pb.RecommendResponse(
        request_id=rec.request_id,
        variant=rec.variant,
        algo_version=rec.algo_version,
        fallback_stage=STAGE_TO_PROTO[rec.stage],
        state_age_seconds=rec.state_age_s,
        degraded=rec.degraded,
    )
    add = response.items.add  # in place: no intermediate ScoredItem messages to copy
    for item in rec.items:
        add(item_id=item.item_id, score=item.score, reasons=item.reasons)
    return response


def rule_from_proto(msg: pb.Rule, *, rule_id: str, created_by: str, created_at: float) -> Rule:
    """Validate an Admin rule; server-owned fields (id if empty, created_*) are filled in."""
    reject_unknown_fields(msg, "rule")
    if msg.kind not in PROTO_TO_KIND:
        raise InvalidRequest("rule.kind must be RULE_KIND_PIN, RULE_KIND_BOOST or RULE_KIND_BLOCK")
    fields: dict[str, object] = {
        "id": msg.id or rule_id,
        "kind": PROTO_TO_KIND[msg.kind],
        "tenant": msg.tenant,
        "surface": msg.surface,
        "note": msg.note,
        "created_by": created_by,
        "created_at": created_at,
    }
    optional = {
        "item_id": msg.item_id or None,
        "category": msg.category or None,
        "position": msg.position or None,
        "factor": msg.factor or None,
        "valid_from": msg.valid_from or None,
        "valid_until": msg.valid_until or None,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    try:
        return Rule.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidRequest(f"rule{'.' + where if where else ''}: {message}") from exc


def _ts(value: object) -> str:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else ""


def rule_to_proto(rule: Rule) -> pb.Rule:
    return pb.Rule(
        id=rule.id,
        kind=KIND_TO_PROTO[rule.kind],
        item_id=rule.item_id or "",
        category=rule.category or "",
        position=rule.position or 0,
        factor=rule.factor or 0.0,
        tenant=rule.tenant,
        surface=rule.surface,
        valid_from=_ts(rule.valid_from),
        valid_until=_ts(rule.valid_until),
        created_by=rule.created_by,
        created_at=_ts(rule.created_at),
        note=rule.note,
    )


def audit_to_proto(entry: AuditEntry) -> pb.AuditEntry:
    return pb.AuditEntry(
        id=entry.id,
        ts=_ts(entry.when),
        who=entry.who,
        action=entry.action,
        target=entry.target,
        detail=entry.detail,
        version=entry.version,
        reason=entry.reason,
    )
