"""TLS of the gRPC port: server credentials from the settings, client channels for the CLI.

Server (``grpc_tls_cert_file`` + ``grpc_tls_key_file``): the port serves TLS only, so a
plaintext client fails its handshake. With ``grpc_tls_client_ca_file`` as well, every client
must present a certificate signed by that CA (mutual TLS). Client (``grpc_client_ca_file``,
optionally ``grpc_client_cert_file`` + ``grpc_client_key_file``): :func:`open_channel` makes
a TLS channel trusting that CA; without a CA it is plaintext. Files are PEM; a missing or
unreadable file is a :class:`~core.errors.ConfigError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from core.errors import ConfigError
from core.settings import Settings

__all__ = [
    "ClientTls",
    "edge_tls_summary",
    "open_channel",
    "open_sync_channel",
    "server_credentials",
]


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{what} {path} is not PEM")
    return data


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port, or None when TLS is not configured."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    chain = _read(settings.grpc_tls_cert_file, "STREAMREC_GRPC_TLS_CERT_FILE")
    key = _read(settings.grpc_tls_key_file, "STREAMREC_GRPC_TLS_KEY_FILE")
    client_ca = None
    if settings.grpc_tls_client_ca_file is not None:
        client_ca = _read(settings.grpc_tls_client_ca_file, "STREAMREC_GRPC_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class ClientTls:
    """What a client needs to reach a TLS port: the CA to trust, an optional client cert."""

    def __init__(
        self,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise ConfigError("a client certificate needs its key, and a key its certificate")
        if cert_file is not None and ca_file is None:
            raise ConfigError("a client certificate needs the server's CA (--tls-ca)")
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> ClientTls:
        """The given files (CLI flags), else the ``grpc_client_*`` settings."""
        return cls(
            ca_file or settings.grpc_client_ca_file,
            cert_file or settings.grpc_client_cert_file,
            key_file or settings.grpc_client_key_file,
        )

    @property
    def enabled(self) -> bool:
        return self.ca_file is not None

    def credentials(self) -> grpc.ChannelCredentials:
        assert self.ca_file is not None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA file"),
            private_key=_read(self.key_file, "client key") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "client certificate")
            if self.cert_file
            else None,
        )


def open_channel(address: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: TLS when ``tls`` has a CA, else plaintext."""
    if tls is None or not tls.enabled:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, tls.credentials())


def open_sync_channel(address: str, tls: ClientTls | None = None) -> grpc.Channel:
    """A blocking channel to ``address`` (the CLI's): TLS when ``tls`` has a CA, else plaintext."""
    if tls is None or not tls.enabled:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, tls.credentials())


def edge_tls_summary(settings: Settings) -> str:
    """``plaintext`` / ``TLS`` / ``mutual TLS``: for the server's start-up log line."""
    if settings.grpc_tls_cert_file is None:
        return "plaintext"
    return "mutual TLS" if settings.grpc_tls_client_ca_file is not None else "TLS"
