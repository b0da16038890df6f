"""The Admin gRPC client of ``streamrec admin``: where to call, with which token, and errors.

``streamrec admin [--addr HOST:PORT] [--token TOKEN] [--timeout S] COMMAND``: the address
defaults to ``STREAMREC_GRPC_ADDR``, the token to ``STREAMREC_ADMIN_TOKEN`` (prefer the
variable: a ``--token`` is visible in the process list), the timeout to
``STREAMREC_NETWORK_TIMEOUT_S``. A failed call raises :class:`AdminCallError` (a
:class:`~core.errors.StreamrecError`), which ``streamrec`` prints as one line and exits 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from pydantic import SecretStr

from core.errors import StreamrecError, UnavailableError
from core.settings import settings
from schemas import recommender_pb2_grpc as pb_grpc
from serving.edge_tls import ClientTls, open_sync_channel

__all__ = ["AdminCallError", "AdminClient", "AdminTarget", "call", "configure", "target"]


class AdminCallError(StreamrecError):
    """The server refused or failed an Admin call; the message is one line."""


@dataclass(frozen=True, slots=True)
class AdminTarget:
    """Where and how ``streamrec admin`` calls the Admin service."""

    addr: str
    token: SecretStr
    timeout_s: float
    tls: ClientTls | None = None  # serving edge (issue 19): None = plaintext


_configured: AdminTarget | None = None


def configure(
    addr: str | None,
    token: str | None,
    timeout_s: float | None,
    *,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Record the group options (None = the setting; TLS from the grpc_client_* settings)."""
    global _configured
    current = settings()
    _configured = AdminTarget(
        addr=addr or current.grpc_addr,
        token=SecretStr(token) if token else current.admin_token,
        timeout_s=timeout_s or current.network_timeout_s,
        tls=ClientTls.from_settings(current, ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key),
    )


def target() -> AdminTarget:
    """The configured target, or one from the settings alone."""
    if _configured is None:
        configure(None, None, None)
    assert _configured is not None
    return _configured


class AdminClient:
    """Unary Admin calls over one channel per call (commands make one or two calls)."""

    def __init__(self, where: AdminTarget) -> None:
        self.where = where

    def channel(self) -> grpc.Channel:
        return open_sync_channel(self.where.addr, self.where.tls)

    def call(self, method: str, request: Message) -> Any:
        """``Admin/<method>(request)``; gRPC failures raise AdminCallError / UnavailableError."""
        where = self.where
        metadata = (("authorization", f"Bearer {where.token.get_secret_value()}"),)
        with self.channel() as channel:
            stub = pb_grpc.AdminStub(channel)
            try:
                return getattr(stub, method)(request, metadata=metadata, timeout=where.timeout_s)
            except grpc.RpcError as exc:
                raise _error(method, where.addr, cast(grpc.Call, exc)) from None


def _error(method: str, addr: str, call: grpc.Call) -> StreamrecError:
    code = call.code()
    details = " ".join((call.details() or code.name).split())
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(
            f"{method}: server at {addr} does not answer (--addr / STREAMREC_GRPC_ADDR; is "
            f"`streamrec serve` running?): {details}"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AdminCallError(f"{method}: {details} (--token / STREAMREC_ADMIN_TOKEN)")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return AdminCallError(f"{method}: the server at {addr} does not know this call (older?)")
    return AdminCallError(f"{method}: {details}")


def call(method: str, request: Message) -> Any:
    """One Admin call to the configured target."""
    return AdminClient(target()).call(method, request)
