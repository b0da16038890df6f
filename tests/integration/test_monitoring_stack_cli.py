"""`streamrec stack up --with-monitoring / status / down` with real Prometheus and Alertmanager.

A throwaway home and free ports (Kafka and Redis too: `up` starts them), the shared jar and
tools caches. Prometheus must load the project's rules, discover the worker, server and monitor
targets from the rendered file_sd files and know the Alertmanager; the webhook URL setting must
reach Alertmanager's config; everything is stopped by pid.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import load_settings
from streamrec.stack import procs
from streamrec.stack.local import LocalStack
from streamrec.stack.monitoring import PROMETHEUS_CONFIG, MonitoringStack
from streamrec.stack.tools import missing_tools, tools_dir
from tests.conftest import Services
from tests.integration.serving_support import free_port
from tests.support import RunCli, free_ports

GONE_S = 60.0


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def test_up_with_monitoring_status_and_down(
    tmp_path: Path, services: Services, run_cli: RunCli
) -> None:
    kafka_port, redis_port = free_ports()
    prometheus_port, alertmanager_port = free_port(), free_port()
    hook = f"http://127.0.0.1:{free_port()}/hook"
    env = {
        "STREAMREC_HOME": str(tmp_path / "home"),
        "STREAMREC_KAFKA_LIBS_DIR": str(services.kafka_libs_dir),
        "STREAMREC_TOOLS_DIR": str(tools_dir(load_settings())),
        "STREAMREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "STREAMREC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "STREAMREC_PROMETHEUS_PORT": str(prometheus_port),
        "STREAMREC_ALERTMANAGER_PORT": str(alertmanager_port),
        "STREAMREC_ALERT_WEBHOOK_URL": hook,
        "STREAMREC_WORKER_METRICS_PORT": str(free_port()),
    }
    settings = load_settings(**{k.removeprefix("STREAMREC_").lower(): v for k, v in env.items()})
    if missing_tools(settings):
        pytest.skip(f"cannot run Prometheus / Alertmanager here: {missing_tools(settings)}")
    monitoring = MonitoringStack(settings)
    try:
        up = run_cli("stack", "up", "--with-monitoring", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(re.findall(r"running\s+pid", up.stdout)) == 4, up.stdout
        records = {s.name: s.pid for s in monitoring.status()}
        assert all(records.values()), records

        again = run_cli("stack", "up", "--with-monitoring", env=env)  # idempotent: reloads
        assert again.returncode == 0, again.stderr
        assert "starting" not in again.stdout
        assert {s.name: s.pid for s in monitoring.status()} == records

        status = run_cli("stack", "status", env=env)
        assert status.returncode == 0, status.stdout
        assert f"http://127.0.0.1:{prometheus_port}" in status.stdout
        assert len(re.findall(r"running\s+pid", status.stdout)) == 4

        prometheus = f"http://127.0.0.1:{prometheus_port}/api/v1"
        rules = _get(f"{prometheus}/rules")["data"]["groups"]
        shipped = yaml.safe_load(
            (PROMETHEUS_CONFIG.parent / "alerts.yml").read_text(encoding="utf-8")
        )
        assert {g["name"] for g in shipped["groups"]} <= {g["name"] for g in rules}
        deadline = time.monotonic() + 60
        while True:  # file_sd is read asynchronously after start
            targets = _get(f"{prometheus}/targets")["data"]["activeTargets"]
            scraped = {t["labels"]["job"]: t["scrapeUrl"] for t in targets}
            if len(scraped) == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert scraped == {
            "streamrec-worker": f"http://127.0.0.1:{settings.worker_metrics_port}/metrics",
            "streamrec-server": f"http://127.0.0.1:{settings.server_metrics_port}/metrics",
            "streamrec-monitor": f"http://127.0.0.1:{settings.monitor_metrics_port}/metrics",
            "prometheus": f"http://127.0.0.1:{prometheus_port}/metrics",
        }
        managers = _get(f"{prometheus}/alertmanagers")["data"]["activeAlertmanagers"]
        assert [m["url"] for m in managers] == [
            f"http://127.0.0.1:{alertmanager_port}/api/v2/alerts"
        ]
        status_doc = _get(f"http://127.0.0.1:{alertmanager_port}/api/v2/status")
        assert hook in status_doc["config"]["original"]

        down = run_cli("stack", "down", env=env)
        assert down.returncode == 0, down.stderr
        for state in monitoring.status():
            assert not state.running and state.pid is None, state
        after = run_cli("stack", "status", env=env)
        assert after.returncode == 1
        assert "prometheus" not in after.stdout  # not wanted any more: not listed
    finally:
        # not via the CLI: cleanup must not depend on what is tested
        monitoring.stop()
        LocalStack(settings).stop()
    for name in ("prometheus", "alertmanager"):
        record = procs.ProcessRecord.load(monitoring.dir[name] / f"{name}.pid")
        assert record is None or procs.wait_gone(record, GONE_S)
