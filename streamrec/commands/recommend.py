"""``streamrec recommend USER``: ask the running server for USER's recommendations.

One ``Recommender/Recommend`` call to ``STREAMREC_GRPC_ADDR`` with a deadline of
``STREAMREC_NETWORK_TIMEOUT_S``. Prints one line per item with its reasons after a line with
the variant and the fallback stage, or (``--json``) one JSON object: ``user``, ``k``,
``request_id``, ``variant``, ``algo_version``, ``fallback_stage``, ``state_age_seconds``,
``degraded`` and ``items`` (``item_id``, ``score``, ``reasons``). A server that does not
answer, or rejects the request, is a one-line error and exit 2.

Serving edge: ``--tls-ca`` (and ``--tls-cert`` / ``--tls-key`` for mutual TLS) connect over
TLS, default the ``STREAMREC_GRPC_CLIENT_*_FILE`` settings; ``--api-key`` (better
``STREAMREC_GRPC_CLIENT_API_KEY``, out of the process list) is sent as ``x-api-key``.
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
from serving.api_keys import API_KEY_HEADER
from serving.edge_tls import ClientTls, open_sync_channel
from serving.servicer import NO_STATE
from streamrec.commands.tls_options import TlsCaOption, TlsCertOption, TlsKeyOption

__all__ = ["command", "recommend", "render", "report"]

_STAGE_PREFIX = "FALLBACK_STAGE_"


def recommend(
    current: Settings,
    user: str,
    k: int,
    *,
    tls: ClientTls | None = None,
    api_key: str | None = None,
) -> pb.RecommendResponse:
    """One Recommend call; gRPC failures raised as streamrec errors (one line each).

    ``tls`` None: the ``grpc_client_*`` settings decide; ``api_key`` None: the setting's.
    """
    addr = current.grpc_addr
    request = pb.RecommendRequest(user_id=user, k=k)
    tls = tls if tls is not None else ClientTls.from_settings(current)
    if api_key is None and current.grpc_client_api_key is not None:
        api_key = current.grpc_client_api_key.get_secret_value()
    metadata = ((API_KEY_HEADER, api_key),) if api_key else None
    with open_sync_channel(addr, tls) as channel:
        try:
            response: pb.RecommendResponse = pb_grpc.RecommenderStub(channel).Recommend(
                request, timeout=current.network_timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            call = cast(grpc.Call, exc)  # what a failed unary call raises is both
            code, details = call.code(), " ".join((call.details() or str(exc)).split())
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise ConfigError(f"server at {addr} rejected the request: {details}") from None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise ConfigError(
                    f"server at {addr} wants an API key: {details} "
                    "(--api-key / STREAMREC_GRPC_CLIENT_API_KEY)"
                ) from None
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise UnavailableError(f"server at {addr} is refusing calls: {details}") from None
            if code == grpc.StatusCode.UNAVAILABLE and details.startswith(NO_STATE):
                raise UnavailableError(f"server at {addr} answered: {details}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                hint = "" if tls.enabled else "; a TLS port needs --tls-ca"
                raise UnavailableError(
                    f"server at {addr} does not answer (STREAMREC_GRPC_ADDR; is "
                    f"`streamrec serve` running?{hint}): {details}"
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
    tls_ca: TlsCaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="API key sent as x-api-key (default STREAMREC_GRPC_CLIENT_API_KEY; the "
            "variable keeps it out of the process list).",
        ),
    ] = None,
) -> None:
    """Ask the running server (STREAMREC_GRPC_ADDR) for USER's top K items, with reasons."""
    if not user.strip():
        raise typer.BadParameter("USER must not be empty", param_hint="'USER'")
    current = settings()
    tls = ClientTls.from_settings(current, ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key)
    doc = report(user, k, recommend(current, user, k, tls=tls, api_key=api_key))
    typer.echo(json.dumps(doc) if as_json else render(doc))
