"""The local stack: one Apache Kafka broker (KRaft, combined mode) and one redis-server.

Owns fetching the broker jars (Maven Central, once, cached in ``HOME/kafka/libs``),
installing redis-server when it is missing, and starting / stopping both as detached
processes. Layout under ``Settings.home`` (one instance per port, so a dev stack and a test
stack share one home and one jar cache without touching each other)::

    kafka/libs/                 broker jars (or Settings.kafka_libs_dir)
    kafka/<port>/               server.properties, log4j.properties, data/, kafka.pid
    redis/<port>/               redis-server --dir, redis.pid
    logs/kafka-<port>.log       broker stdout+stderr
    logs/redis-<port>.log

Which services are *managed*: an address on the loopback interface (the defaults
``127.0.0.1:19092`` and ``redis://127.0.0.1:16379/0``, or the test ports) is started and
stopped here; any other address is *external* and is only checked. ``stop`` signals only the
pids in its pid files, and only while they are still the processes it launched.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import ipaddress
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from core.errors import StackError
from core.settings import Settings
from streamrec.stack import procs
from streamrec.stack.deps import (
    Echo,
    ensure_kafka_jars,
    ensure_redis_server,
    file_lock,
    find_java,
    find_redis_server,
    kafka_jars_cached,
    kafka_libs_dir,
    missing_prerequisites,
)

__all__ = [
    "KAFKA",
    "REDIS",
    "Endpoint",
    "LocalStack",
    "ServiceState",
    "down",
    "ensure_kafka_jars",
    "ensure_redis_server",
    "find_java",
    "find_redis_server",
    "kafka_endpoint",
    "kafka_jars_cached",
    "kafka_libs_dir",
    "missing_prerequisites",
    "redis_endpoint",
    "status",
    "up",
]

KAFKA = "kafka"
REDIS = "redis"
STOP_GRACE_S = 30.0


def _silent(_: str) -> None:
    return None


# --- addresses -----------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a service answers, and whether this module may start and stop it there."""

    host: str
    port: int
    address: str
    managed: bool


def kafka_endpoint(settings: Settings) -> Endpoint:
    servers = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
    host, _, port = servers[0].rpartition(":")
    host = host.strip("[]")
    managed = len(servers) == 1 and _is_loopback(host) and int(port) < 65535
    return Endpoint(host, int(port), settings.kafka_bootstrap, managed)


def redis_endpoint(settings: Settings) -> Endpoint:
    parsed = urlparse(settings.redis_url)
    try:
        port = parsed.port or 6379
    except ValueError as exc:
        raise StackError(f"STREAMREC_REDIS_URL: bad port in {settings.redis_url!r}") from exc
    host = parsed.hostname or ""
    shown = settings.redis_url
    if parsed.password:
        shown = shown.replace(f":{parsed.password}@", ":***@", 1)
    managed = parsed.scheme == "redis" and _is_loopback(host)
    return Endpoint(host, port, shown, managed)


# --- status --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One service as ``status`` sees it."""

    name: str
    address: str
    managed: bool
    running: bool
    pid: int | None
    log: Path | None

    def line(self) -> str:
        if self.running and self.pid is not None:
            state = f"running   pid {self.pid}"
        elif self.running:
            state = (
                "running   (local, not started by streamrec)"
                if self.managed
                else "running   (external)"
            )
        else:
            state = "stopped" if self.managed else "not answering (external)"
        return f"{self.name:<6} {self.address:<28} {state}"


# --- configuration files -------------------------------------------------------------------

_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=WARN
log4j.logger.org.apache.kafka=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.Kafka$=INFO
"""


def _server_properties(endpoint: Endpoint, data_dir: Path) -> str:
    bind = "127.0.0.1" if endpoint.host == "localhost" else endpoint.host
    bind = f"[{bind}]" if ":" in bind else bind
    advertised = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
    port, ctrl = endpoint.port, endpoint.port + 1
    return f"""\
# Written by `streamrec stack up`; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{bind}:{ctrl}
listeners=PLAINTEXT://{bind}:{port},CONTROLLER://{bind}:{ctrl}
advertised.listeners=PLAINTEXT://{advertised}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.network.threads=2
num.io.threads=4
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.cleaner.dedupe.buffer.size=33554432
"""


def _add_line(path: Path, line: str) -> None:
    with path.open("a") as handle:
        handle.write(line + "\n")


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _new_cluster_id() -> str:
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


# --- the stack -----------------------------------------------------------------------------


class LocalStack:
    """Start, stop and inspect the local Kafka and Redis of one ``Settings``.

    Stateless between calls: everything it knows is in the pid files under
    ``Settings.home``, so any instance (a CLI run, a test fixture) can stop what another
    started. Methods block (subprocesses, sockets, sleeps): from async code call them with
    ``await asyncio.to_thread(stack.stop_kafka)``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        timeout_s: float = 90.0,
        redis_persistence: bool = False,
        echo: Echo = _silent,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.redis_persistence = redis_persistence
        self.echo = echo
        self.kafka = kafka_endpoint(settings)
        self.redis = redis_endpoint(settings)
        home = settings.home
        self._kafka_dir = home / "kafka" / str(self.kafka.port)
        self._redis_dir = home / "redis" / str(self.redis.port)
        self._pid = {
            KAFKA: self._kafka_dir / "kafka.pid",
            REDIS: self._redis_dir / "redis.pid",
        }
        self._log = {
            KAFKA: home / "logs" / f"kafka-{self.kafka.port}.log",
            REDIS: home / "logs" / f"redis-{self.redis.port}.log",
        }
        self._log_start: dict[str, int] = {}

    # --- inspection --------------------------------------------------------------------------
    def _record(self, name: str) -> procs.ProcessRecord | None:
        """Our live process for ``name``; a stale pid file is removed."""
        path = self._pid[name]
        record = procs.ProcessRecord.load(path)
        if record is not None and procs.is_ours(record):
            return record
        path.unlink(missing_ok=True)
        return None

    def _answers(self, name: str) -> bool:
        if name == KAFKA:
            return procs.kafka_answers(self.kafka.host, self.kafka.port)
        return procs.redis_answers(self.settings.redis_url)

    def service(self, name: str) -> ServiceState:
        endpoint = self.kafka if name == KAFKA else self.redis
        record = self._record(name) if endpoint.managed else None
        return ServiceState(
            name=name,
            address=endpoint.address,
            managed=endpoint.managed,
            running=self._answers(name),
            pid=record.pid if record else None,
            log=self._log[name] if endpoint.managed else None,
        )

    def status(self) -> list[ServiceState]:
        return [self.service(KAFKA), self.service(REDIS)]

    # --- whole stack -------------------------------------------------------------------------
    def start(self) -> list[ServiceState]:
        """Start what is not running yet (idempotent) and wait until both answer."""
        self._start((KAFKA, REDIS))
        return self.status()

    def stop(self) -> list[ServiceState]:
        """Stop the processes this stack started (idempotent)."""
        self.stop_kafka()
        self.stop_redis()
        return self.status()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- single services ---------------------------------------------------------------------
    def start_kafka(self) -> None:
        """Start the broker if it is not running, and wait until it answers."""
        self._start_one(KAFKA)

    def start_redis(self) -> None:
        """Start redis-server if it is not running, and wait until it answers PING."""
        self._start_one(REDIS)

    def stop_kafka(self, *, graceful: bool = True) -> bool:
        """Stop our broker (SIGTERM, or SIGKILL when not ``graceful``); True if one ran."""
        return self._stop_one(KAFKA, graceful=graceful)

    def stop_redis(self, *, graceful: bool = True) -> bool:
        """Stop our redis-server (SIGTERM, or SIGKILL when not ``graceful``); True if one ran."""
        return self._stop_one(REDIS, graceful=graceful)

    def _start_one(self, name: str) -> None:
        self._start((name,))

    def _start(self, names: tuple[str, ...], on_launch: Echo = _silent) -> None:
        """Launch what is down among ``names`` (one starter at a time) and wait for all."""
        _, starting, _ = self._lease_paths()
        with file_lock(starting):
            launched = []
            for name in names:
                if self._launch(name):
                    launched.append(name)
                    on_launch(name)
            deadline = time.monotonic() + self.timeout_s  # after a first-time jar fetch
            for name in sorted(names, key=(REDIS, KAFKA).index):
                self._wait_ready(name, deadline, launched=name in launched)

    # --- shared use by concurrent test runs ----------------------------------------------------
    def _lease_paths(self) -> tuple[Path, Path, Path]:
        base = self.settings.home / "run" / f"stack-{self.kafka.port}-{self.redis.port}"
        return (
            base.with_name(base.name + ".users.lock"),
            base.with_name(base.name + ".start.lock"),
            base.with_name(base.name + ".auto"),
        )

    @contextlib.contextmanager
    def lease(self) -> Iterator[list[ServiceState]]:
        """Use the stack together with other concurrent users (test sessions, `stack exec`).

        Holds a shared lock for the duration; starts what is down (remembering it as
        started-by-a-lease); on exit, the last holder stops what leases started. A stack
        started by hand (`streamrec stack up`) is used, never stopped. Locks die with their
        process, so a killed holder never blocks the others.
        """
        users, _, auto = self._lease_paths()
        users.parent.mkdir(parents=True, exist_ok=True)
        with users.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                self._start((KAFKA, REDIS), on_launch=lambda name: _add_line(auto, name))
                yield self.status()
            finally:
                self._stop_if_last(handle)

    def claim(self) -> None:
        """Treat the running services as started by hand: leases will no longer stop them."""
        self._lease_paths()[2].unlink(missing_ok=True)

    def stop_if_unused(self) -> bool:
        """Stop what leases started, unless a lease holder is still running; True if stopped."""
        users, _, auto = self._lease_paths()
        if not auto.exists():
            return False
        users.parent.mkdir(parents=True, exist_ok=True)
        with users.open("a") as handle:
            return self._stop_if_last(handle)

    def _stop_if_last(self, handle: IO[str]) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another holder still uses the stack; the last one stops it
        try:
            _, _, auto = self._lease_paths()
            names = set(_read_lines(auto))
            for name in (KAFKA, REDIS):
                if name in names:
                    self._stop_one(name, graceful=True)
            auto.unlink(missing_ok=True)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
        return True

    def _stop_one(self, name: str, *, graceful: bool) -> bool:
        endpoint = self.kafka if name == KAFKA else self.redis
        if not endpoint.managed:
            self.echo(f"{name}: {endpoint.address} is external; left alone")
            return False
        record = self._record(name)
        if record is None:
            return False
        self.echo(f"{name}: stopping pid {record.pid}")
        if not procs.terminate(record, STOP_GRACE_S, graceful=graceful):
            raise StackError(f"{name}: pid {record.pid} did not exit after SIGKILL")
        self._pid[name].unlink(missing_ok=True)
        return True

    def _launch(self, name: str) -> bool:
        """Start the process for ``name`` unless it runs or answers; True if launched now."""
        endpoint = self.kafka if name == KAFKA else self.redis
        if not endpoint.managed:
            return False
        if self._record(name) is not None or self._answers(name):
            return False
        if procs.port_in_use(endpoint.host, endpoint.port):
            raise StackError(
                f"{name}: port {endpoint.port} is in use by a program that is not {name}"
            )
        if name == KAFKA:
            argv, cwd = self._kafka_argv(), self._kafka_dir
        else:
            argv, cwd = self._redis_argv(), self._redis_dir
        self.echo(f"{name}: starting on {endpoint.address} (log {self._log[name]})")
        self._log_start[name] = procs.log_offset(self._log[name])
        record = procs.launch(argv, log=self._log[name], cwd=cwd)
        record.save(self._pid[name])
        return True

    def _wait_ready(self, name: str, deadline: float, *, launched: bool) -> None:
        endpoint = self.kafka if name == KAFKA else self.redis
        offset = self._log_start.get(name, 0) if launched else 0
        while True:
            if self._answers(name):
                return
            record = self._record(name) if endpoint.managed else None
            if not endpoint.managed:
                variable = "KAFKA_BOOTSTRAP" if name == KAFKA else "REDIS_URL"
                raise StackError(
                    f"{name} at {endpoint.address} (external, STREAMREC_{variable}) does not answer"
                )
            if record is None:
                hint = procs.log_hint(self._log[name], offset)
                raise StackError(
                    f"{name} exited while starting: {hint or 'no output'} (log {self._log[name]})"
                )
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{name} did not answer on {endpoint.address} within {self.timeout_s:g}s "
                    f"(pid {record.pid} left running; log {self._log[name]})"
                )
            time.sleep(0.2)

    # --- command lines -----------------------------------------------------------------------
    def _kafka_argv(self) -> list[str]:
        libs = ensure_kafka_jars(self.settings, self.echo)
        java = str(find_java())
        data = self._kafka_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = self._kafka_dir / "server.properties"
        log4j = self._kafka_dir / "log4j.properties"
        props.write_text(_server_properties(self.kafka, data))
        log4j.write_text(_LOG4J)
        classpath = f"{libs}/*"
        log4j_opt = f"-Dlog4j.configuration=file:{log4j}"
        self._format_storage(java, classpath, log4j_opt, props, data)
        heap = self.settings.kafka_heap
        return [java, f"-Xmx{heap}", "-Djava.awt.headless=true", log4j_opt,
                "-cp", classpath, "kafka.Kafka", str(props)]  # fmt: skip

    def _format_storage(
        self, java: str, classpath: str, log4j_opt: str, props: Path, data: Path
    ) -> None:
        marker = self._kafka_dir / "formatted"
        if marker.is_file() and (data / "meta.properties").is_file():
            return
        cluster_id = _new_cluster_id()
        self.echo(f"kafka: formatting storage in {data} (once)")
        argv = [java, "-Xmx256m", log4j_opt, "-cp", classpath, "kafka.tools.StorageTool",
                "format", "-t", cluster_id, "-c", str(props), "--ignore-formatted"]  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackError("kafka: formatting storage took longer than 120 s") from exc
        if result.returncode != 0:
            lines = (result.stdout + result.stderr).strip().splitlines() or ["(no output)"]
            raise StackError(f"kafka: formatting storage failed: {lines[-1][:300]}")
        marker.write_text(cluster_id + "\n")

    def _redis_argv(self) -> list[str]:
        binary = str(ensure_redis_server(self.echo))
        self._redis_dir.mkdir(parents=True, exist_ok=True)
        bind = "127.0.0.1" if self.redis.host == "localhost" else self.redis.host
        argv = [binary, "--port", str(self.redis.port), "--bind", bind,
                "--save", "", "--dir", str(self._redis_dir), "--daemonize", "no",
                "--logfile", str(self._log[REDIS])]  # fmt: skip
        if self.redis_persistence:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        password = urlparse(self.settings.redis_url).password
        if password:
            argv += ["--requirepass", password]
        return argv


# --- the functions behind `streamrec stack …` ----------------------------------------------


def up(settings: Settings, timeout_s: float = 90.0, echo: Echo = print) -> list[ServiceState]:
    """Start the local stack (idempotent), wait until it answers and print where it is."""
    started = time.monotonic()
    stack = LocalStack(settings, timeout_s=timeout_s, echo=echo)
    states = stack.start()
    stack.claim()
    for state in states:
        echo(state.line())
    echo(f"stack ready in {time.monotonic() - started:.1f}s")
    return states


def down(settings: Settings, echo: Echo = print) -> list[ServiceState]:
    """Stop the processes `up` started; never anything else."""
    stack = LocalStack(settings, echo=echo)
    states = stack.stop()
    stack.claim()
    for state in states:
        if state.running and state.managed:
            echo(f"{state.name}: {state.address} answers but was not started here; left alone")
    return states


def status(settings: Settings) -> list[ServiceState]:
    return LocalStack(settings).status()
