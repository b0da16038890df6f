"""Worker and server subprocesses started by a tool (the demo, the freshness benchmark).

Each is started in its own session with its output in a log file, and is only ever stopped
through the handle that started it: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import UnavailableError
from core.settings import Settings


def streamrec_executable() -> str:
    """The ``streamrec`` command beside this interpreter (the virtualenv's), else on PATH."""
    beside = Path(sys.executable).with_name("streamrec")
    return str(beside) if beside.exists() else shutil.which("streamrec") or "streamrec"


def child_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """This process's environment plus the ``STREAMREC_*`` variables that make a worker or
    server child see ``settings``: the same broker, Redis, topics, keys, group, address,
    metrics ports, home and last-known file. ``overrides`` (setting name → value) win."""
    env = dict(os.environ)
    env.update(
        STREAMREC_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        STREAMREC_REDIS_URL=settings.redis_url,
        STREAMREC_TOPIC_PREFIX=settings.topic_prefix,
        STREAMREC_KEY_PREFIX=settings.key_prefix,
        STREAMREC_PARTITIONS=str(settings.partitions),
        STREAMREC_CONSUMER_GROUP=settings.consumer_group,
        STREAMREC_GRPC_ADDR=settings.grpc_addr,
        STREAMREC_WORKER_METRICS_PORT=str(settings.worker_metrics_port),
        STREAMREC_SERVER_METRICS_PORT=str(settings.server_metrics_port),
        STREAMREC_HOME=str(settings.home),
    )
    if settings.last_known_file is not None:
        env["STREAMREC_LAST_KNOWN_FILE"] = str(settings.last_known_file)
    env.update({f"STREAMREC_{name.upper()}": value for name, value in overrides.items()})
    return env


@dataclass(slots=True)
class Child:
    """One subprocess: its name, the process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    owner: str = "streamrec"

    def tail(self, lines: int = 3) -> str:
        """The last lines of its log, on one line."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def check_alive(self) -> None:
        """Raise :class:`UnavailableError` with the log's tail if the process has exited."""
        if self.proc.poll() is not None:
            raise UnavailableError(
                f"{self.owner} {self.name} exited with {self.proc.returncode}: "
                f"{self.tail() or 'no output'} (log {self.log})"
            )

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; only ever the process this handle started."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)


def start_child(
    name: str, argv: list[str], env: Mapping[str, str], log: Path, *, owner: str
) -> Child:
    """Start ``streamrec ARGV`` in its own session, appending its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [streamrec_executable(), *argv],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, proc, log, owner)
