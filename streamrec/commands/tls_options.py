"""The client TLS options shared by the commands that call a server (recommend, admin).

Each is ``None`` unless given: the command falls back to the ``STREAMREC_GRPC_CLIENT_*_FILE``
settings named in the help.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TlsCaOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca",
        exists=True,
        dir_okay=False,
        help="PEM CA of the server's certificate: connect over TLS "
        "(default STREAMREC_GRPC_CLIENT_CA_FILE).",
    ),
]
TlsCertOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        exists=True,
        dir_okay=False,
        help="PEM client certificate for mutual TLS (default STREAMREC_GRPC_CLIENT_CERT_FILE).",
    ),
]
TlsKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        exists=True,
        dir_okay=False,
        help="PEM key of --tls-cert (default STREAMREC_GRPC_CLIENT_KEY_FILE).",
    ),
]
