"""Prometheus and Alertmanager of the local stack (``streamrec stack up --with-monitoring``).

Both come from Debian's packages unpacked into the tools cache (:mod:`streamrec.stack.tools`)
and run on 127.0.0.1 as detached processes, stopped by pid like Kafka and Redis. Their
configuration is ``deploy/prometheus/prometheus.yml`` (with its rule files) and
``deploy/alertmanager/alertmanager.yml``, rendered into a run directory on every start:

* Prometheus: the ``file_sd`` target files the config names (``targets/worker.yml`` …) are
  written from the settings' ports; rule files are read from ``deploy/prometheus/`` (or
  :attr:`Tuning.rules_dir`); a ``runbook_base`` still at its ``.invalid`` placeholder points
  at this checkout's ``docs/runbooks`` (``file://``), so the alerts' links open locally.
* Alertmanager: the webhook receivers' URL becomes ``Settings.alert_webhook_url`` when set.
* :class:`Tuning` (used by the end-to-end alert test) shortens intervals and grouping.

Layout under ``Settings.home``::

    prometheus/<port>/      prometheus.yml, targets/*.yml, data/, prometheus.pid
    alertmanager/<port>/    alertmanager.yml, data/, alertmanager.pid
    logs/prometheus-<port>.log, logs/alertmanager-<port>.log
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from core.errors import StackError
from core.settings import Settings
from streamrec.stack import procs
from streamrec.stack.deps import Echo
from streamrec.stack.tools import ensure_alertmanager, ensure_prometheus

__all__ = [
    "ALERTMANAGER",
    "ALERTMANAGER_CONFIG",
    "PROMETHEUS",
    "PROMETHEUS_CONFIG",
    "MonitoringStack",
    "Tuning",
    "render_alertmanager",
    "render_prometheus",
    "target_files",
]

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
PROMETHEUS = "prometheus"
ALERTMANAGER = "alertmanager"
HOST = "127.0.0.1"
STOP_GRACE_S = 20.0
_HEADER = "# Rendered by `streamrec stack` from {source}; edit that file, not this copy.\n"


def _silent(_: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Tuning:
    """Changes to the deploy/ configs for one run (None = as written in the file).

    Durations are Prometheus / Alertmanager duration strings (``"1s"``, ``"5m"``).
    ``rules_dir`` holds rule files to load instead of ``deploy/prometheus/`` ones (same names).
    """

    scrape_interval: str | None = None
    evaluation_interval: str | None = None
    group_wait: str | None = None
    group_interval: str | None = None
    repeat_interval: str | None = None
    resolve_timeout: str | None = None
    rules_dir: Path | None = None


# --- rendering -----------------------------------------------------------------------------


def target_files(settings: Settings) -> dict[str, list[str]]:
    """``file_sd`` target file name → the local addresses it lists (a port 0 lists none)."""
    ports = {
        "worker.yml": settings.worker_metrics_port,
        "server.yml": settings.server_metrics_port,
        "monitor.yml": settings.monitor_metrics_port,
        "prometheus.yml": settings.prometheus_port,
        "alertmanager.yml": settings.alertmanager_port,
    }
    return {name: [f"{HOST}:{port}"] if port else [] for name, port in ports.items()}


def _sd_files(config: dict[str, Any]) -> list[str]:
    jobs = [*config.get("scrape_configs", []), *config.get("alerting", {}).get("alertmanagers", [])]
    return [f for job in jobs for sd in job.get("file_sd_configs", []) for f in sd["files"]]


def render_prometheus(
    settings: Settings, tuning: Tuning = Tuning(), source: Path = PROMETHEUS_CONFIG
) -> tuple[str, dict[str, str]]:
    """The Prometheus config for the local stack and its target files (name → YAML text)."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    glob = config.setdefault("global", {})
    if tuning.scrape_interval:
        glob["scrape_interval"] = tuning.scrape_interval
    if tuning.evaluation_interval:
        glob["evaluation_interval"] = tuning.evaluation_interval
    labels = glob.get("external_labels") or {}
    if (urlparse(str(labels.get("runbook_base", ""))).hostname or "").endswith(".invalid"):
        labels["runbook_base"] = RUNBOOKS.as_uri()
    rules_dir = tuning.rules_dir or source.parent
    config["rule_files"] = [str((rules_dir / rule).resolve()) for rule in config["rule_files"]]
    known = target_files(settings)
    files: dict[str, str] = {}
    for path in _sd_files(config):
        name = Path(path).name
        if Path(path).parent != Path("targets") or name not in known:
            raise StackError(
                f"{source} names target file {path!r}, which the local stack does not write "
                f"(it writes targets/ {', '.join(sorted(known))})"
            )
        files[name] = yaml.safe_dump([{"targets": known[name]}] if known[name] else [])
    text = _HEADER.format(source=source) + yaml.safe_dump(config, sort_keys=False)
    return text, files


def render_alertmanager(
    settings: Settings, tuning: Tuning = Tuning(), source: Path = ALERTMANAGER_CONFIG
) -> str:
    """The Alertmanager config for the local stack (webhook URL and tuning applied)."""
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    if settings.alert_webhook_url:
        hooks = [w for r in config.get("receivers", []) for w in r.get("webhook_configs", [])]
        if not hooks:
            raise StackError(f"{source} has no webhook receiver for STREAMREC_ALERT_WEBHOOK_URL")
        for hook in hooks:
            hook["url"] = settings.alert_webhook_url
    route = config["route"]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        value = getattr(tuning, key)
        if value:
            route[key] = value
            for child in route.get("routes", []):
                if key in child:
                    child[key] = value
    if tuning.resolve_timeout:
        config.setdefault("global", {})["resolve_timeout"] = tuning.resolve_timeout
    return _HEADER.format(source=source) + yaml.safe_dump(config, sort_keys=False)


# --- processes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonitorState:
    """Prometheus or Alertmanager as ``stack status`` sees it."""

    name: str
    url: str
    running: bool
    pid: int | None
    log: Path

    def line(self) -> str:
        if self.running and self.pid is not None:
            state = f"running   pid {self.pid}"
        elif self.running:
            state = "running   (local, not started by streamrec)"
        else:
            state = "stopped"
        return f"{self.name:<12} {self.url:<28} {state}"


def _ready(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=timeout_s) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class MonitoringStack:
    """Start, stop and inspect the local Prometheus and Alertmanager of one ``Settings``.

    Stateless between calls like :class:`streamrec.stack.local.LocalStack`: pid files under
    ``Settings.home`` say what runs. Methods block (subprocesses, HTTP probes, sleeps).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tuning: Tuning = Tuning(),
        timeout_s: float = 60.0,
        echo: Echo = _silent,
    ) -> None:
        self.settings = settings
        self.tuning = tuning
        self.timeout_s = timeout_s
        self.echo = echo
        home = settings.home
        self.port = {PROMETHEUS: settings.prometheus_port, ALERTMANAGER: settings.alertmanager_port}
        self.dir = {name: home / name / str(port) for name, port in self.port.items()}
        self.log = {name: home / "logs" / f"{name}-{port}.log" for name, port in self.port.items()}
        self._wanted = home / "run" / f"monitoring-{self.port[PROMETHEUS]}.wanted"

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port[name]}"

    # --- inspection --------------------------------------------------------------------------
    def _pid_file(self, name: str) -> Path:
        return self.dir[name] / f"{name}.pid"

    def _record(self, name: str) -> procs.ProcessRecord | None:
        path = self._pid_file(name)
        record = procs.ProcessRecord.load(path)
        if record is not None and procs.is_ours(record):
            return record
        path.unlink(missing_ok=True)
        return None

    def service(self, name: str) -> MonitorState:
        record = self._record(name)
        running = _ready(self.url(name))
        return MonitorState(name, self.url(name), running, record.pid if record else None,
                            self.log[name])  # fmt: skip

    def status(self) -> list[MonitorState]:
        return [self.service(ALERTMANAGER), self.service(PROMETHEUS)]

    @property
    def wanted(self) -> bool:
        """True after ``start`` until ``stop``: ``stack status`` then expects both to answer."""
        return self._wanted.exists()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> list[MonitorState]:
        """Render the configs and start what is not running (idempotent); wait until ready.

        A running Prometheus or Alertmanager of ours is reloaded (SIGHUP) with the freshly
        rendered config, so a changed port or webhook URL takes effect.
        """
        self._wanted.parent.mkdir(parents=True, exist_ok=True)
        self._wanted.touch()
        deadline = time.monotonic() + self.timeout_s
        for name, argv in ((ALERTMANAGER, self._alertmanager_argv),
                           (PROMETHEUS, self._prometheus_argv)):  # fmt: skip
            self._start_one(name, argv, deadline)
        return self.status()

    def stop(self) -> list[MonitorState]:
        """Stop the processes ``start`` launched (idempotent); never anything else."""
        for name in (PROMETHEUS, ALERTMANAGER):
            record = self._record(name)
            if record is None:
                continue
            self.echo(f"{name}: stopping pid {record.pid}")
            if not procs.terminate(record, STOP_GRACE_S):
                raise StackError(f"{name}: pid {record.pid} did not exit after SIGKILL")
            self._pid_file(name).unlink(missing_ok=True)
        self._wanted.unlink(missing_ok=True)
        return self.status()

    def __enter__(self) -> MonitoringStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start_one(self, name: str, argv: Callable[[], list[str]], deadline: float) -> None:
        record = self._record(name)
        if record is None and (_ready(self.url(name)) or procs.port_in_use(HOST, self.port[name])):
            raise StackError(
                f"{name}: port {self.port[name]} is in use by a program streamrec did not start"
            )
        command = argv()  # renders the config, also for a running process (reloaded below)
        if record is not None:
            procs.reload(record)
            return
        self.echo(f"{name}: starting on {self.url(name)} (log {self.log[name]})")
        offset = procs.log_offset(self.log[name])
        record = procs.launch(command, log=self.log[name], cwd=self.dir[name])
        record.save(self._pid_file(name))
        self._wait_ready(name, record, offset, deadline)

    def _wait_ready(
        self, name: str, record: procs.ProcessRecord, offset: int, deadline: float
    ) -> None:
        while not _ready(self.url(name)):
            if not procs.is_ours(record):
                hint = procs.log_hint(self.log[name], offset)
                self._pid_file(name).unlink(missing_ok=True)
                raise StackError(
                    f"{name} exited while starting: {hint or 'no output'} (log {self.log[name]})"
                )
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{name} was not ready on {self.url(name)} within {self.timeout_s:g}s "
                    f"(pid {record.pid} left running; log {self.log[name]})"
                )
            time.sleep(0.2)

    # --- command lines -----------------------------------------------------------------------
    def _prometheus_argv(self) -> list[str]:
        root = ensure_prometheus(self.settings, self.echo)
        run = self.dir[PROMETHEUS]
        (run / "targets").mkdir(parents=True, exist_ok=True)
        (run / "data").mkdir(exist_ok=True)
        text, targets = render_prometheus(self.settings, self.tuning)
        for name, body in targets.items():
            _write(run / "targets" / name, body)
        config = run / "prometheus.yml"
        _write(config, text)
        return [
            str(root / "usr" / "bin" / "prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={run / 'data'}",
            "--storage.tsdb.retention.time=31d",
            f"--web.listen-address={HOST}:{self.port[PROMETHEUS]}",
            f"--web.external-url={self.url(PROMETHEUS)}/",
            f"--web.local-assets={root / 'usr' / 'share' / 'prometheus' / 'web'}",
            f"--web.console.templates={root / 'etc' / 'prometheus' / 'consoles'}",
            f"--web.console.libraries={root / 'etc' / 'prometheus' / 'console_libraries'}",
        ]

    def _alertmanager_argv(self) -> list[str]:
        root = ensure_alertmanager(self.settings, self.echo)
        run = self.dir[ALERTMANAGER]
        (run / "data").mkdir(parents=True, exist_ok=True)
        config = run / "alertmanager.yml"
        _write(config, render_alertmanager(self.settings, self.tuning))
        return [
            str(root / "usr" / "bin" / "prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={run / 'data'}",
            f"--web.listen-address={HOST}:{self.port[ALERTMANAGER]}",
            f"--web.external-url={self.url(ALERTMANAGER)}/",
            "--cluster.listen-address=",  # a single instance: no gossip port
        ]


def _write(path: Path, text: str) -> None:
    """Replace ``path`` atomically (a reloading Prometheus never reads half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
