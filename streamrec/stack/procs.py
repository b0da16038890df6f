"""Detached child processes the local stack starts, and the probes that say they answer.

A :class:`ProcessRecord` (kept as a JSON pid file) remembers the pid, the kernel start time
and the executable of a process we launched. :func:`is_ours` re-checks all three against
``/proc`` before anything is signalled, so a recycled pid or a process someone else started
is never touched. Nothing here finds processes by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

_PROC = Path("/proc")
# Children started by this interpreter: kept so they can be reaped (no zombies) and so the
# Popen objects are not collected while the child runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What we launched: enough to recognise the very same process later."""

    pid: int
    start_ticks: int
    exe: str
    argv: tuple[str, ...]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ProcessRecord | None:
        """The record in ``path``; None when absent or unreadable (treated as stale)."""
        try:
            raw = json.loads(path.read_text())
            return cls(
                pid=int(raw["pid"]),
                start_ticks=int(raw["start_ticks"]),
                exe=str(raw["exe"]),
                argv=tuple(str(a) for a in raw["argv"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def start_ticks(pid: int) -> int | None:
    """Kernel start time of a live (non-zombie) process, or None when it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X", "x"}:
        return None
    return int(fields[19])


def is_ours(record: ProcessRecord) -> bool:
    """True while the process in ``record`` still runs and is the one we launched."""
    _reap(record.pid)
    if not _PROC.is_dir():  # no /proc (not Linux): fall back to "a process has this pid"
        try:
            os.kill(record.pid, 0)
        except OSError:
            return False
        return True
    if start_ticks(record.pid) != record.start_ticks:
        return False
    try:
        exe = os.readlink(_PROC / str(record.pid) / "exe")
    except PermissionError:
        return True  # start time already matched; exe is only readable for our own user
    except OSError:  # an exiting process has released its exe before it turns zombie
        return start_ticks(record.pid) == record.start_ticks
    return exe == record.exe or exe.startswith(f"{record.exe} (deleted)")


def launch(argv: Sequence[str], *, log: Path, cwd: Path) -> ProcessRecord:
    """Start ``argv`` detached (own session, stdout+stderr appended to ``log``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== streamrec stack: {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        out.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[child.pid] = child
    ticks = start_ticks(child.pid)
    return ProcessRecord(
        pid=child.pid,
        start_ticks=ticks if ticks is not None else -1,
        exe=os.path.realpath(argv[0]),
        argv=tuple(argv),
    )


def wait_gone(record: ProcessRecord, timeout_s: float) -> bool:
    """Wait until the process has exited; True if it did within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while is_ours(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(record: ProcessRecord, grace_s: float, *, graceful: bool = True) -> bool:
    """SIGTERM (or SIGKILL when not ``graceful``), SIGKILL after ``grace_s``; True if it ended.

    Only signals the process when :func:`is_ours` confirms it; a vanished process counts as
    ended.
    """
    first = signal.SIGTERM if graceful else signal.SIGKILL
    for sig, wait_s in ((first, grace_s), (signal.SIGKILL, 10.0)):
        if not is_ours(record):
            return True
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)
        if wait_gone(record, wait_s):
            return True
    return not is_ours(record)


def reload(record: ProcessRecord) -> bool:
    """SIGHUP (re-read configuration) to the process in ``record`` if it is still ours."""
    if not is_ours(record):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGHUP)
    return True


def log_offset(log: Path) -> int:
    try:
        return log.stat().st_size
    except OSError:
        return 0


def log_hint(log: Path, offset: int) -> str:
    """The most telling line the process logged since ``offset`` (errors first), one line."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            lines = [ln.strip() for ln in handle.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("===")]
    for line in reversed(lines):
        if "ERROR" in line or "Exception" in line or "FATAL" in line or " # " in line:
            return line[:300]
    return lines[-1][:300] if lines else ""


# --- probes --------------------------------------------------------------------------------


#: threads running :func:`kafka_answers`; aiokafka's logging from them is dropped (a probe
#: answers yes or no: "Unable connect to …" on stderr would only be noise)
_KAFKA_PROBE_THREAD = "streamrec-kafka-probe"


def _not_from_a_probe(record: logging.LogRecord) -> bool:
    return not (record.threadName or "").startswith(_KAFKA_PROBE_THREAD)


for _logger in ("aiokafka", "aiokafka.conn"):
    logging.getLogger(_logger).addFilter(_not_from_a_probe)


async def _kafka_metadata(host: str, port: int, timeout_s: float) -> bool:
    client = AIOKafkaClient(
        bootstrap_servers=f"{host}:{port}",
        client_id="streamrec-stack",
        request_timeout_ms=max(1, int(timeout_s * 1000)),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await client.bootstrap()  # ApiVersions + Metadata on the bootstrap connection
        return bool(client.cluster.brokers())
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await client.close()


def kafka_answers(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when a Kafka broker at host:port answers Metadata with at least one live broker.

    aiokafka's client bootstrap, bounded by ``timeout_s``, on a private event loop in a
    short-lived thread: callable from any thread, inside a running event loop or not.
    """
    answer: list[bool] = []

    def probe() -> None:
        answer.append(asyncio.run(_kafka_metadata(host, port, timeout_s)))

    thread = threading.Thread(target=probe, name=_KAFKA_PROBE_THREAD, daemon=True)
    thread.start()
    thread.join(2 * timeout_s + 1.0)
    return bool(answer and answer[0])


def redis_answers(url: str, timeout_s: float = 2.0) -> bool:
    """True when the Redis at ``url`` answers PING."""
    client = redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def port_in_use(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
