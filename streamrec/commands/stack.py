"""``streamrec stack``: start, stop and inspect the local Kafka + Redis (+ monitoring) stack."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import Annotated

import typer

from core.errors import ConfigError
from core.settings import settings
from streamrec.stack import local as stack
from streamrec.stack import tools
from streamrec.stack.monitoring import MonitoringStack

app = typer.Typer(
    help="Local Kafka (KRaft) + Redis for development and tests.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def up(
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds to wait until both answer.")
    ] = 90.0,
    with_monitoring: Annotated[
        bool,
        typer.Option(
            "--with-monitoring",
            help="Also start Prometheus (scraping the worker, server and monitor metrics ports, "
            "with deploy/prometheus's rules) and Alertmanager.",
        ),
    ] = False,
) -> None:
    """Start the stack (idempotent) and wait until Kafka and Redis answer."""
    current = settings()
    stack.up(current, timeout_s=timeout)
    if with_monitoring:
        for state in MonitoringStack(current, timeout_s=timeout, echo=print).start():
            print(state.line())


@app.command()
def down(
    if_unused: Annotated[
        bool,
        typer.Option(
            "--if-unused",
            help="Only stop what `stack exec` / test sessions started, and only when none runs.",
        ),
    ] = False,
) -> None:
    """Stop the processes `stack up` started (never anything else)."""
    if if_unused:
        stack.LocalStack(settings(), echo=print).stop_if_unused()
    else:
        MonitoringStack(settings(), echo=print).stop()
        stack.down(settings())


@app.command(name="exec")
def exec_command(
    command: Annotated[list[str], typer.Argument(help="Command to run, after `--`.")],
    timeout: Annotated[
        float, typer.Option("--timeout", min=1.0, help="Seconds to wait until both answer.")
    ] = 90.0,
) -> None:
    """Run COMMAND with the stack up, shared with concurrent runs; the last one out stops it.

    Starts what is down, runs COMMAND, then stops what it (or another `exec` / test session)
    started once no other user remains. Exits with COMMAND's exit code.
    """
    local = stack.LocalStack(settings(), timeout_s=timeout, echo=print)
    with local.lease() as states:
        for state in states:
            print(state.line())
        code = _run(command)
    raise typer.Exit(code)


def _run(command: list[str]) -> int:
    """Run ``command`` and wait for it, even when interrupted, so the cleanup still runs.

    Ctrl-C reaches the command through the terminal's process group, so SIGINT is only
    waited out here; SIGTERM (sent to this process alone) is passed on.
    """
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        raise ConfigError(f"cannot run {command[0]!r}: {exc.strerror}") from exc

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: None),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
    }
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def status() -> None:
    """Show each service; exit 0 only if everything that should run answers.

    Prometheus and Alertmanager are shown (and must answer) after `up --with-monitoring`,
    or while they run.
    """
    current = settings()
    states = stack.status(current)
    for state in states:
        print(state.line())
    healthy = all(state.running for state in states)
    monitoring = MonitoringStack(current)
    for monitor in monitoring.status():
        if monitoring.wanted or monitor.running or monitor.pid is not None:
            print(monitor.line())
            healthy = healthy and (monitor.running or not monitoring.wanted)
    raise typer.Exit(0 if healthy else 1)


@app.command()
def fetch(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only what is fetched or installed.")
    ] = False,
    with_monitoring: Annotated[
        bool,
        typer.Option(
            "--with-monitoring",
            help="Also unpack Prometheus, promtool and Alertmanager from Debian's packages.",
        ),
    ] = False,
    monitoring_only: Annotated[
        bool,
        typer.Option(
            "--monitoring-only", help="Only Prometheus, promtool and Alertmanager (scripts/test)."
        ),
    ] = False,
) -> None:
    """Fetch the broker jars and install redis-server if missing (later starts are offline)."""
    current = settings()
    if with_monitoring or monitoring_only:
        prometheus = tools.ensure_prometheus(current, echo=print)
        promtool = tools.ensure_promtool(current, echo=print)
        alertmanager = tools.ensure_alertmanager(current, echo=print)
        if not quiet:
            print(f"prometheus:   {prometheus}")
            print(f"promtool:     {promtool}")
            print(f"alertmanager: {alertmanager}")
        if monitoring_only:
            return
    libs = stack.ensure_kafka_jars(current, echo=print)
    binary = stack.ensure_redis_server(echo=print)
    java = stack.find_java()
    if not quiet:
        print(f"kafka jars:   {libs}")
        print(f"java:         {java}")
        print(f"redis-server: {binary}")
