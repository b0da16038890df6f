"""``streamrec admin``: operate a running server through its Admin gRPC service.

Sub-commands: ``principals add|list|revoke``, ``history``, ``diff``, ``rollback``,
``config show|set|unset|apply``, ``experiments create|start|pause|resume|stop|promote|list``
(and the operational controls of :mod:`streamrec.commands.admin` registered below). Each
call authenticates with a principal's token (``--token`` / ``STREAMREC_ADMIN_TOKEN``); a
refused or failed call prints one line and exits 2.
"""

from __future__ import annotations

from importlib import import_module
from typing import Annotated

import typer

from streamrec.commands.admin import client
from streamrec.commands.tls_options import TlsCaOption, TlsCertOption, TlsKeyOption

__all__ = ["app"]

app = typer.Typer(
    help="Operate a running server: principals, config history / rollback, run-time "
    "settings, experiments.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

# (module in streamrec.commands.admin, name): modules of groups expose ``app``
_GROUPS: tuple[tuple[str, str], ...] = (
    ("principals", "principals"),
    ("config", "config"),
    ("experiments", "experiments"),
)
# (module, name): the module's function ``name`` with - as _ is the command
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("history", "history"),
    ("history", "diff"),
    ("history", "rollback"),
    # operational controls (issue 19): kill switch, decision traces, erasure
    ("kill_switch", "kill-switch"),
    ("explain", "explain"),
    ("forget", "forget"),
)


@app.callback()
def _options(
    addr: Annotated[
        str | None,
        typer.Option("--addr", metavar="HOST:PORT", help="Server (default STREAMREC_GRPC_ADDR)."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="A principal's token (default STREAMREC_ADMIN_TOKEN; the variable keeps it "
            "out of the process list).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", min=0.001, help="Seconds per call (default STREAMREC_NETWORK_TIMEOUT_S)."
        ),
    ] = None,
    tls_ca: TlsCaOption = None,
    tls_cert: TlsCertOption = None,
    tls_key: TlsKeyOption = None,
) -> None:
    """Operate a running server: principals, config history / rollback, settings, experiments."""
    if addr is not None:
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise typer.BadParameter(f"expected HOST:PORT, got {addr!r}", param_hint="--addr")
    client.configure(addr, token, timeout, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key)


for _module, _name in _GROUPS:
    app.add_typer(import_module(f"{__name__}.{_module}").app, name=_name)
for _module, _name in _COMMANDS:
    app.command(name=_name)(
        getattr(import_module(f"{__name__}.{_module}"), _name.replace("-", "_"))
    )
