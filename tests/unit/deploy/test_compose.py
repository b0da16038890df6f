"""docker-compose.yml and its Prometheus / Grafana files agree with Settings and each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from core.settings import (
    DEFAULT_KAFKA_BOOTSTRAP,
    DEFAULT_REDIS_URL,
    ENV_PREFIX,
    Settings,
    load_settings,
)
from tests.support import REPO, run_cli

COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana" / "provisioning"
STREAMREC_SERVICES = ("topics", "worker", "server")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = _load(COMPOSE)
    assert isinstance(compose["services"], dict)
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment with ``${VAR:-default}`` resolved to its default."""
    raw = service.get("environment", {})
    assert isinstance(raw, dict), "environment must be a mapping"
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in raw.items()}


def _host_port(service: dict[str, Any], container_port: int) -> int:
    for mapping in service.get("ports", []):
        parts = str(mapping).split(":")
        if int(parts[-1]) == container_port:
            return int(parts[-2])
    raise AssertionError(f"container port {container_port} is not published")


def test_services_present(services: dict[str, Any]) -> None:
    assert {"kafka", "redis", "worker", "server", "monitor", "prometheus", "alertmanager"} <= set(
        services
    )
    assert "grafana" in services
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    for name in STREAMREC_SERVICES:
        assert services[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (REPO / "deploy" / "docker" / "Dockerfile").is_file()


def test_every_streamrec_variable_is_a_setting_with_a_valid_value(
    services: dict[str, Any],
) -> None:
    seen = 0
    for name, service in services.items():
        env = _env(service)
        ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        for variable in ours:
            field = variable.removeprefix(ENV_PREFIX).lower()
            assert field in Settings.model_fields, f"{name}: {variable} is not a Settings field"
        if ours:
            seen += 1
            overrides = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in ours.items()}
            load_settings(**overrides)  # raises SettingsError on a bad value
    assert seen >= len(STREAMREC_SERVICES)


def test_host_ports_match_the_local_defaults(services: dict[str, Any]) -> None:
    kafka_port = int(DEFAULT_KAFKA_BOOTSTRAP.rsplit(":", 1)[1])
    redis_port = urlparse(DEFAULT_REDIS_URL).port
    assert _host_port(services["kafka"], kafka_port) == kafka_port
    assert _host_port(services["redis"], 6379) == redis_port
    kafka_env = _env(services["kafka"])
    assert f"HOST://{DEFAULT_KAFKA_BOOTSTRAP}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka_env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka_env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert "--save" in services["redis"]["command"]


def test_streamrec_services_reach_kafka_and_redis_inside_the_network(
    services: dict[str, Any],
) -> None:
    kafka_env = _env(services["kafka"])
    for name in STREAMREC_SERVICES:
        env = _env(services[name])
        host, port = env["STREAMREC_KAFKA_BOOTSTRAP"].rsplit(":", 1)
        assert f"PLAINTEXT://{host}:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        assert urlparse(env["STREAMREC_REDIS_URL"]).hostname == "redis"


def _compose_targets(config: dict[str, Any], services: dict[str, Any]) -> dict[str, set[str]]:
    """Job (or ``alertmanager``) → the addresses of the file_sd files compose mounts."""
    (mount,) = [v for v in services["prometheus"]["volumes"] if "/etc/prometheus/targets" in v]
    source = REPO / str(mount).split(":")[0]
    jobs = [
        *((job["job_name"], job) for job in config["scrape_configs"]),
        *(("alertmanager", am) for am in config["alerting"]["alertmanagers"]),
    ]
    found: dict[str, set[str]] = {}
    for name, job in jobs:
        assert set(job) - {"job_name"} == {"file_sd_configs"}, f"{name}: targets belong in file_sd"
        for sd in job["file_sd_configs"]:
            for path in sd["files"]:
                assert path.startswith("targets/"), path  # relative to prometheus.yml
                groups = _load(source / path.removeprefix("targets/"))
                found.setdefault(name, set()).update(t for g in groups for t in g["targets"])
    return found


def test_prometheus_scrapes_the_metrics_ports(services: dict[str, Any]) -> None:
    config = _load(PROMETHEUS)
    targets = _compose_targets(config, services)
    defaults = load_settings()
    for service, field in (
        ("worker", "worker_metrics_port"),
        ("server", "server_metrics_port"),
        ("monitor", "monitor_metrics_port"),
    ):
        port = int(
            _env(services[service]).get(f"STREAMREC_{field.upper()}", getattr(defaults, field))
        )
        assert port == Settings.model_fields[field].default
        assert targets[f"streamrec-{service}"] == {f"{service}:{port}"}
        assert str(port) in [str(p) for p in services[service]["expose"]]
    assert config["rule_files"] == ["alerts.yml"]  # relative to /etc/prometheus/prometheus.yml
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"


def test_prometheus_sends_alerts_to_the_alertmanager_service(services: dict[str, Any]) -> None:
    targets = _compose_targets(_load(PROMETHEUS), services)
    alertmanager = services["alertmanager"]
    host, port = next(iter(targets["alertmanager"])).split(":")
    assert host == "alertmanager" and len(targets["alertmanager"]) == 1
    assert _host_port(alertmanager, int(port)) == int(port)
    argv = alertmanager["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in argv
    assert (
        "./deploy/alertmanager/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro"
        in (alertmanager["volumes"])
    )
    assert alertmanager["image"].startswith("prom/alertmanager:v0.25")
    assert "alertmanager" in services["prometheus"]["depends_on"]


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    datasources = _load(GRAFANA / "datasources" / "prometheus.yml")["datasources"]
    assert urlparse(datasources[0]["url"]).hostname == "prometheus"
    providers = _load(GRAFANA / "dashboards" / "streamrec.yml")["providers"]
    path = providers[0]["options"]["path"]
    targets = [str(v).split(":")[1] for v in services["grafana"]["volumes"]]
    assert any(target.startswith(f"{path}/") for target in targets)


def test_every_mounted_file_exists(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"


def test_container_commands_are_streamrec_commands(services: dict[str, Any]) -> None:
    for name in STREAMREC_SERVICES:
        argv = services[name]["command"]
        assert argv[0] == "streamrec"
        result = run_cli(*argv[1:], "--help", timeout=60)
        assert result.returncode == 0, f"{name}: `{' '.join(argv)}` does not exist: {result.stderr}"


def test_the_image_copies_every_package_and_installs_the_lock() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        pattern.rstrip("*")
        for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.M))
    assert copied == packages
    assert "uv export --frozen --no-dev" in dockerfile and "--require-hashes" in dockerfile


def test_the_admin_token_must_be_set(services: dict[str, Any]) -> None:
    """No default token ships: compose stops with a message when it is unset (issue 19)."""
    raw = str(services["server"]["environment"]["STREAMREC_ADMIN_TOKEN"])
    assert re.fullmatch(r"\$\{STREAMREC_ADMIN_TOKEN:\?[^}]+\}", raw), raw
    assert "change-me" not in COMPOSE.read_text()
