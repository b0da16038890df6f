"""``streamrec recommend USER``: ask the running server for USER's recommendations.

One ``Recommender/Recommend`` call to ``STREAMREC_GRPC_ADDR`` with a deadline of
``STREAMREC_NETWORK_TIMEOUT_S``. Prints one line per item with its reasons after a line with
the variant and the fallback stage, or (``--json``) one JSON object: ``user``, ``k``,
``request_id``, ``variant``, ``algo_version``, ``fallback_stage``, ``state_age_seconds``,
``degraded`` and ``items`` (``item_id``, ``score``, ``reasons``). A server that does not
answer, or rejects the request, is a one-line error and exit 2.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

import grpc
import typer

from core.errors import ConfigError, StreamrecError, UnavailableError
from core.settings import Settings, settings
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from serving.servicer import NO_STATE

__all__ = ["command", "recommend", "render", "report"]

_STAGE_PREFIX = "FALLBACK_STAGE_"


def recommend(current: Settings, user: str, k: int) -> pb.RecommendResponse:
    """One Recommend call; gRPC failures raised as streamrec errors (one line each)."""
    addr = current.grpc_addr
    request = pb.RecommendRequest(user_id=user, k=k)
    with grpc.insecure_channel(addr) as channel:
        try:
            response: pb.RecommendResponse = pb_grpc.RecommenderStub(channel).Recommend(
                request, timeout=current.network_timeout_s
            )
        except grpc.RpcError as exc:
            call = cast(grpc.Call, exc)  # what a failed unary call raises is both
            code, details = call.code(), " ".join((call.details() or str(exc)).split())
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise ConfigError(f"server at {addr} rejected the request: {details}") from None
            if code == grpc.StatusCode.UNAVAILABLE and details.startswith(NO_STATE):
                raise UnavailableError(f"server at {addr} answered: {details}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise UnavailableError(
                    f"server at {addr} does not answer (STREAMREC_GRPC_ADDR; is "
                    f"`streamrec serve` running?): {details}"
                ) from None
            raise StreamrecError(f"server at {addr}: {code.name}: {details}") from None
    return response


def report(user: str, k: int, response: pb.RecommendResponse) -> dict[str, Any]:
    """The JSON document of ``--json``."""
    return {
        "user": user,
        "k": k,
        "request_id": response.request_id or None,
        "variant": response.variant,
        "algo_version": response.algo_version,
        "fallback_stage": pb.FallbackStage.Name(response.fallback_stage),
        "state_age_seconds": response.state_age_seconds,
        "degraded": response.degraded,
        "items": [
            {"item_id": item.item_id, "score": item.score, "reasons": list(item.reasons)}
            for item in response.items
        ],
    }


def render(doc: dict[str, Any]) -> str:
    """The plain output: a header line, then one line per item with its reasons."""
    stage = doc["fallback_stage"].removeprefix(_STAGE_PREFIX).lower()
    header = (
        f"{doc['user']}: {len(doc['items'])} items, variant {doc['variant'] or '-'}, "
        f"fallback {stage}"
    )
    if doc["degraded"]:
        header += " (degraded: state unreadable, in-process caches only)"
    if doc["request_id"]:
        header += f", request {doc['request_id']}"
    lines = [header]
    width = max((len(item["item_id"]) for item in doc["items"]), default=0)
    for rank, item in enumerate(doc["items"], start=1):
        reasons = "; ".join(item["reasons"]) or "-"
        lines.append(f"{rank:>3}  {item['item_id']:<{width}}  {item['score']:>10.4f}  {reasons}")
    return "\n".join(lines)


def command(
    user: Annotated[str, typer.Argument(metavar="USER", help="User id to recommend for.")],
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Items wanted (1-100).")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Ask the running server (STREAMREC_GRPC_ADDR) for USER's top K items, with reasons."""
    if not user.strip():
        raise typer.BadParameter("USER must not be empty", param_hint="'USER'")
    doc = report(user, k, recommend(settings(), user, k))
    typer.echo(json.dumps(doc) if as_json else render(doc))
