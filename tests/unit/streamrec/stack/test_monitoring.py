"""Monitoring stack internals: rendering deploy/ configs, the tools cache, status lines.

The rendered configs are also checked by the real ``promtool check config`` and
``amtool check-config`` when the tools cache holds them (``streamrec stack fetch
--with-monitoring``; ``scripts/test`` fetches them).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from core.errors import SettingsError, StackError
from core.settings import Settings, load_settings
from streamrec.stack import tools
from streamrec.stack.monitoring import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    MonitoringStack,
    MonitorState,
    Tuning,
    render_alertmanager,
    render_prometheus,
    target_files,
)
from tests.support import REPO


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": tmp_path / "home",
        "worker_metrics_port": 19464,
        "server_metrics_port": 19465,
        "monitor_metrics_port": 19466,
        "prometheus_port": 19190,
        "alertmanager_port": 19195,
    }
    return load_settings(**{**values, **overrides})


def _tool(name: str) -> str | None:
    cached = tools.tools_dir(load_settings())
    for candidate in (
        cached / "prometheus" / "usr" / "bin" / name,
        cached / "prometheus-alertmanager" / "usr" / "bin" / name,
    ):
        if candidate.is_file():
            return str(candidate)
    return shutil.which(name)


PROMTOOL = _tool("promtool")
AMTOOL = _tool("amtool")


# --- Prometheus ----------------------------------------------------------------------------
def test_target_files_come_from_the_settings_ports(tmp_path: Path) -> None:
    files = target_files(_settings(tmp_path, server_metrics_port=0))
    assert files == {
        "worker.yml": ["127.0.0.1:19464"],
        "server.yml": [],  # metrics off: nothing to scrape
        "monitor.yml": ["127.0.0.1:19466"],
        "prometheus.yml": ["127.0.0.1:19190"],
        "alertmanager.yml": ["127.0.0.1:19195"],
    }


def test_rendered_prometheus_config_is_the_deploy_file_with_local_targets(
    tmp_path: Path,
) -> None:
    text, targets = render_prometheus(_settings(tmp_path))
    config = yaml.safe_load(text)
    deploy = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["scrape_configs"] == deploy["scrape_configs"]
    assert config["alerting"] == deploy["alerting"]
    assert config["global"]["scrape_interval"] == deploy["global"]["scrape_interval"]
    assert config["rule_files"] == [
        str(PROMETHEUS_CONFIG.parent / name) for name in deploy["rule_files"]
    ]
    # the .invalid placeholder becomes this checkout's runbooks, so the links open locally
    assert config["global"]["external_labels"]["runbook_base"] == (
        (REPO / "docs" / "runbooks").as_uri()
    )
    assert set(targets) == {"worker.yml", "server.yml", "monitor.yml", "prometheus.yml",
                            "alertmanager.yml"}  # fmt: skip
    assert yaml.safe_load(targets["worker.yml"]) == [{"targets": ["127.0.0.1:19464"]}]


def test_a_real_runbook_base_and_tuning(tmp_path: Path) -> None:
    source = tmp_path / "prometheus.yml"
    deploy = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    deploy["global"]["external_labels"]["runbook_base"] = "https://git.example/docs/runbooks"
    source.write_text(yaml.safe_dump(deploy))
    rules = tmp_path / "rules"
    tuning = Tuning(scrape_interval="1s", evaluation_interval="2s", rules_dir=rules)
    text, _ = render_prometheus(_settings(tmp_path), tuning, source=source)
    config = yaml.safe_load(text)
    assert config["global"]["external_labels"]["runbook_base"] == (
        "https://git.example/docs/runbooks"
    )
    assert (config["global"]["scrape_interval"], config["global"]["evaluation_interval"]) == (
        "1s",
        "2s",
    )
    assert config["rule_files"] == [str((rules / "alerts.yml").resolve())]


def test_an_unknown_target_file_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "prometheus.yml"
    deploy = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    deploy["scrape_configs"].append(
        {"job_name": "other", "file_sd_configs": [{"files": ["targets/other.yml"]}]}
    )
    source.write_text(yaml.safe_dump(deploy))
    with pytest.raises(StackError, match=r"targets/other\.yml"):
        render_prometheus(_settings(tmp_path), source=source)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not fetched (stack fetch --monitoring-only)")
def test_promtool_accepts_the_rendered_config(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    text, targets = render_prometheus(_settings(tmp_path))
    (tmp_path / "targets").mkdir()
    for name, body in targets.items():
        (tmp_path / "targets" / name).write_text(body)
    (tmp_path / "prometheus.yml").write_text(text)
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr  # every target file exists


# --- Alertmanager --------------------------------------------------------------------------
def test_alertmanager_config_keeps_its_url_unless_a_webhook_is_set(tmp_path: Path) -> None:
    deploy = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    as_is = yaml.safe_load(render_alertmanager(_settings(tmp_path)))
    assert as_is == deploy
    hook = "http://127.0.0.1:18080/hook"
    config = yaml.safe_load(render_alertmanager(_settings(tmp_path, alert_webhook_url=hook)))
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert urls and set(urls) == {hook}
    assert config["route"] == deploy["route"]


def test_alertmanager_tuning_reaches_the_routes(tmp_path: Path) -> None:
    tuning = Tuning(group_wait="1s", group_interval="2s", repeat_interval="1h",
                    resolve_timeout="30s")  # fmt: skip
    config = yaml.safe_load(render_alertmanager(_settings(tmp_path), tuning))
    route = config["route"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "1s",
        "2s",
        "1h",
    )
    assert all(child.get("repeat_interval", "1h") == "1h" for child in route["routes"])
    assert config["global"]["resolve_timeout"] == "30s"


def test_a_webhook_url_must_be_http() -> None:
    with pytest.raises(SettingsError, match="ALERT_WEBHOOK_URL"):
        load_settings(alert_webhook_url="ftp://example/hook")


@pytest.mark.skipif(AMTOOL is None, reason="amtool not fetched (stack fetch --monitoring-only)")
def test_amtool_accepts_the_deploy_and_rendered_configs(tmp_path: Path) -> None:
    assert AMTOOL is not None
    rendered = tmp_path / "alertmanager.yml"
    settings = _settings(tmp_path, alert_webhook_url="http://127.0.0.1:18080/hook")
    rendered.write_text(render_alertmanager(settings, Tuning(group_wait="1s")))
    for path in (ALERTMANAGER_CONFIG, rendered):
        result = subprocess.run(
            [AMTOOL, "check-config", str(path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr


# --- tools cache and processes -------------------------------------------------------------
def test_a_package_counts_as_unpacked_only_when_complete(tmp_path: Path) -> None:
    settings = _settings(tmp_path, tools_dir=tmp_path / "tools")
    root = tmp_path / "tools" / tools.PROMETHEUS_PACKAGE.package
    assert tools.unpacked(settings, tools.PROMETHEUS_PACKAGE) is None
    for binary in tools.PROMETHEUS_PACKAGE.binaries:
        (root / binary).parent.mkdir(parents=True, exist_ok=True)
        (root / binary).write_text("#!/bin/sh\n")
        (root / binary).chmod(0o755)
    assert tools.unpacked(settings, tools.PROMETHEUS_PACKAGE) is None  # no stamp: interrupted
    (root / ".complete").write_text("2.42.0+ds-5\n")
    assert tools.unpacked(settings, tools.PROMETHEUS_PACKAGE) == root
    (root / tools.PROMETHEUS_PACKAGE.binaries[0]).unlink()
    assert tools.unpacked(settings, tools.PROMETHEUS_PACKAGE) is None
    assert tools.tools_dir(_settings(tmp_path)) == tmp_path / "home" / "tools"


def test_a_port_held_by_another_program_is_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = int(listener.getsockname()[1])
        stack = MonitoringStack(_settings(tmp_path, alertmanager_port=port))
        with pytest.raises(StackError, match=f"port {port} is in use"):
            stack.start()
    assert stack.wanted  # `stack status` now reports them as expected but down
    stack.stop()
    assert not stack.wanted


def test_status_lines(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    running = MonitorState("prometheus", "http://127.0.0.1:19090", True, 42, log)
    assert "running" in running.line() and "pid 42" in running.line()
    foreign = MonitorState("alertmanager", "http://127.0.0.1:19095", True, None, log)
    assert "not started by streamrec" in foreign.line()
    assert MonitorState("prometheus", "u", False, None, log).line().endswith("stopped")
    states = MonitoringStack(_settings(tmp_path)).status()
    assert [s.name for s in states] == ["alertmanager", "prometheus"]
    assert not any(s.running or s.pid for s in states)
