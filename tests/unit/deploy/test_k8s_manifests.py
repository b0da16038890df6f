"""deploy/k8s agrees with Settings, with itself and with the Prometheus alert rules.

Every YAML document is parsed; the checks cover what a typo would silently break in a
cluster: env names that are not settings, ports that differ from the ones the processes
listen on, selectors that match no pod, probes on the wrong port, more workers than
partitions, and Prometheus relabelling that would scrape the wrong port.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from core.errors import ConfigError
from core.settings import ENV_PREFIX, Settings, load_settings
from serving.auth import check_admin_token
from tests.support import REPO, run_cli

K8S = REPO / "deploy" / "k8s"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
#: directories of shared config files that deploy/k8s includes to generate ConfigMaps
GENERATED = {"prometheus": PROMETHEUS.parent, "alertmanager": ALERTMANAGER.parent}
SCALING_DOC = REPO / "docs" / "scaling.md"
KUBECTL = shutil.which("kubectl")
IMAGE = "streamrec:latest"
REQUIRED_KINDS = {
    "Namespace",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Job",
}
#: Deployment name → the streamrec command its container runs.
COMMANDS = {
    "streamrec-worker": ["streamrec", "worker"],
    "streamrec-server": ["streamrec", "serve"],
    "streamrec-monitor": ["streamrec", "monitor"],
}
#: Deployment name → the Settings field of its /metrics port.
METRICS_PORT_FIELD = {
    "streamrec-worker": "worker_metrics_port",
    "streamrec-server": "server_metrics_port",
    "streamrec-monitor": "monitor_metrics_port",
}

Doc = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _docs() -> list[Doc]:
    docs: list[Doc] = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
                docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return _docs()


def _one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _configmap(docs: list[Doc]) -> dict[str, str]:
    data = _one(docs, "ConfigMap", "streamrec-config")["data"]
    assert isinstance(data, dict)
    return {str(k): str(v) for k, v in data.items()}


def _settings(docs: list[Doc]) -> Settings:
    """The Settings every pod gets from the ConfigMap (raises on an invalid value)."""
    overrides = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in _configmap(docs).items()}
    return load_settings(**overrides)


def _deployments(docs: list[Doc]) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}


def _pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def _container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per streamrec pod"
    container: Doc = containers[0]
    return container


def _ports(container: Doc) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])}


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(deployment: Doc) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


# --- structure ---------------------------------------------------------------------------------
def test_every_document_is_a_named_object_and_the_kinds_are_present(docs: list[Doc]) -> None:
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        assert doc["metadata"].get("name"), doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "streamrec", doc["metadata"]["name"]
    assert {d["kind"] for d in docs} >= REQUIRED_KINDS
    assert set(_deployments(docs)) == set(COMMANDS)
    hpa = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert hpa and all(d["apiVersion"] == "autoscaling/v2" for d in hpa)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "streamrec"
    local = [r for r in kustomization["resources"] if not r.startswith("../")]
    assert sorted(local) == sorted(p.name for p in _manifest_files())
    shared = [r for r in kustomization["resources"] if r.startswith("../")]
    assert sorted(shared) == sorted(f"../{name}" for name in GENERATED)
    assert [i["name"] for i in kustomization["images"]] == [IMAGE.partition(":")[0]]


def _generators() -> dict[str, tuple[Path, list[str]]]:
    """ConfigMap name → (directory, files) of the generators in the shared config directories."""
    found = {}
    for directory in GENERATED.values():
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        assert kustomization["namespace"] == "streamrec"
        assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
        for generator in kustomization["configMapGenerator"]:
            found[generator["name"]] = (directory, list(generator["files"]))
    return found


def test_configmaps_are_generated_from_the_shared_config_files() -> None:
    generators = _generators()
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    directory, files = generators["streamrec-prometheus-rules"]
    assert directory == PROMETHEUS.parent
    assert sorted(files) == sorted(prometheus["rule_files"]), "every rule file is shipped"
    directory, files = generators["streamrec-alertmanager"]
    assert (directory, files) == (ALERTMANAGER.parent, [ALERTMANAGER.name])
    for directory, names in generators.values():
        for name in names:
            assert (directory / name).is_file(), name


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kustomize_builds_the_same_objects(docs: list[Doc]) -> None:
    assert KUBECTL is not None
    built = subprocess.run(
        [KUBECTL, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built) if d}
    expected = {(d["kind"], d["metadata"]["name"]) for d in docs}
    generators = _generators()
    assert set(objects) == expected | {("ConfigMap", name) for name in generators}
    for name, (directory, files) in generators.items():
        data = objects[("ConfigMap", name)]["data"]
        assert objects[("ConfigMap", name)]["metadata"]["namespace"] == "streamrec"
        assert data == {f: (directory / f).read_text() for f in files}, f"{name} differs"


# --- settings ----------------------------------------------------------------------------------
def test_configmap_holds_only_valid_settings(docs: list[Doc]) -> None:
    data = _configmap(docs)
    for name in data:
        assert name.startswith(ENV_PREFIX), name
        assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name
    assert "STREAMREC_ADMIN_TOKEN" not in data, "the admin token belongs in the Secret"
    settings = _settings(docs)
    assert settings.grpc_addr.rpartition(":")[0] == "0.0.0.0", "must listen on the pod IP"


def test_every_streamrec_env_name_in_any_pod_is_a_settings_field(docs: list[Doc]) -> None:
    secret = _one(docs, "Secret", "streamrec-secrets")
    secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    assert secret_keys == {"STREAMREC_ADMIN_TOKEN"}
    names = set(_configmap(docs)) | secret_keys
    refs: set[tuple[str, str]] = set()
    for pod, spec in _pod_specs(docs):
        for container in spec["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                for kind in ("configMapRef", "secretRef"):
                    if kind in source:
                        refs.add((kind, source[kind]["name"]))
        assert any(c.get("envFrom") for c in spec["containers"]), f"{pod} gets no settings"
    assert refs <= {("configMapRef", "streamrec-config"), ("secretRef", "streamrec-secrets")}
    for name in names:
        if name.startswith(ENV_PREFIX):
            assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name
    admin = Settings.model_fields["admin_token"].annotation
    assert admin is not None and admin.__name__ == "SecretStr"


def test_only_the_server_gets_the_admin_token(docs: list[Doc]) -> None:
    for pod, spec in _pod_specs(docs):
        secret_refs = [
            s for c in spec["containers"] for s in c.get("envFrom", []) if "secretRef" in s
        ]
        assert bool(secret_refs) == (pod == "streamrec-server"), pod


# --- workloads ---------------------------------------------------------------------------------
def test_containers_run_the_streamrec_commands_from_the_image(docs: list[Doc]) -> None:
    for name, deployment in _deployments(docs).items():
        container = _container(deployment)
        assert container["command"] == COMMANDS[name]
        assert container["image"] == IMAGE
    job = _one(docs, "Job", "streamrec-topics")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "streamrec",
        "topics",
        "create",
    ]


def test_the_commands_exist() -> None:
    for argv in [*COMMANDS.values(), ["streamrec", "topics", "create"]]:
        result = run_cli(*argv[1:], "--help", timeout=60)
        assert result.returncode == 0, f"`{' '.join(argv)}` does not exist: {result.stderr}"


def test_worker_replicas_do_not_exceed_partitions(docs: list[Doc]) -> None:
    partitions = int(_configmap(docs)["STREAMREC_PARTITIONS"])
    assert partitions == _settings(docs).partitions
    replicas = _deployments(docs)["streamrec-worker"]["spec"]["replicas"]
    assert 1 <= replicas <= partitions
    monitor = _deployments(docs)["streamrec-monitor"]["spec"]
    assert monitor["replicas"] == 1
    assert monitor["strategy"]["type"] == "Recreate", "never two monitors at once"


def test_container_ports_are_the_ports_the_processes_listen_on(docs: list[Doc]) -> None:
    settings = _settings(docs)
    deployments = _deployments(docs)
    for name, field in METRICS_PORT_FIELD.items():
        port = getattr(settings, field)
        assert port == Settings.model_fields[field].default, f"{field} differs from its default"
        assert _ports(_container(deployments[name]))["metrics"] == port, name
    grpc_port = int(settings.grpc_addr.rpartition(":")[2])
    assert _ports(_container(deployments["streamrec-server"]))["grpc"] == grpc_port


def test_server_probes_use_grpc_health_on_the_grpc_port(docs: list[Doc]) -> None:
    settings = _settings(docs)
    grpc_port = int(settings.grpc_addr.rpartition(":")[2])
    container = _container(_deployments(docs)["streamrec-server"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe


def test_worker_and_monitor_probes_hit_their_metrics_port(docs: list[Doc]) -> None:
    for name in ("streamrec-worker", "streamrec-monitor"):
        container = _container(_deployments(docs)[name])
        assert "livenessProbe" in container, name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                get = container[probe]["httpGet"]
                assert get["port"] in {"metrics", _ports(container)["metrics"]}, (name, probe)


def test_termination_grace_covers_the_drain(docs: list[Doc]) -> None:
    settings = _settings(docs)
    deployments = _deployments(docs)
    server = deployments["streamrec-server"]["spec"]["template"]["spec"]
    pre_stop = server["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + 2 * settings.shutdown_grace_s
    assert server["terminationGracePeriodSeconds"] > needed
    worker = deployments["streamrec-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= 30


def test_every_container_has_requests_and_a_memory_limit(docs: list[Doc]) -> None:
    for pod, spec in _pod_specs(docs):
        for container in spec["containers"]:
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), pod
            assert "memory" in resources["limits"], pod


def test_read_only_root_filesystems_get_a_writable_home(docs: list[Doc]) -> None:
    home = str(_settings(docs).home)
    for pod, spec in _pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, pod
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, pod
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if pod in {"streamrec-worker", "streamrec-server"}:
                assert home in mounts, f"{pod}: STREAMREC_HOME {home} is not writable"
    worker = _container(_deployments(docs)["streamrec-worker"])
    # faust creates its data directory (<consumer group>-data) in the working directory
    assert worker["workingDir"] == home


# --- server scaling ----------------------------------------------------------------------------
def test_hpa_scales_the_server_deployment_on_cpu(docs: list[Doc]) -> None:
    hpa = _one(docs, "HorizontalPodAutoscaler", "streamrec-server")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "streamrec-server",
    )
    assert hpa["minReplicas"] >= 2
    assert hpa["maxReplicas"] >= hpa["minReplicas"]
    cpu = [m for m in hpa["metrics"] if m["type"] == "Resource"]
    assert cpu and cpu[0]["resource"]["name"] == "cpu"
    server = _deployments(docs)["streamrec-server"]
    assert "replicas" not in server["spec"], "the HPA owns the replica count"
    assert "cpu" in _container(server)["resources"]["requests"], "HPA utilisation needs it"


def test_selectors_match_their_pods(docs: list[Doc]) -> None:
    deployments = _deployments(docs)
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert _matches(selector, _pod_labels(deployment)), name
        others = [n for n, d in deployments.items() if n != name]
        for other in others:
            assert not _matches(selector, _pod_labels(deployments[other])), (name, other)
    server = deployments["streamrec-server"]
    server_ports = _ports(_container(server))
    services = [d for d in docs if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"streamrec-server"}
    for service in services:
        assert _matches(service["spec"]["selector"], _pod_labels(server))
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in server_ports or target in server_ports.values(), port
            assert port["port"] == server_ports[port["name"]], port
    cluster_ip = _one(docs, "Service", "streamrec-server")["spec"]
    assert cluster_ip.get("type", "ClusterIP") == "ClusterIP"
    assert {p["name"] for p in cluster_ip["ports"]} == {"grpc", "metrics"}
    pdbs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert "streamrec-server" in pdbs
    for name, pdb in pdbs.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [n for n, d in deployments.items() if _matches(selector, _pod_labels(d))]
        assert matched == [name], (name, matched)


# --- Prometheus --------------------------------------------------------------------------------
def _scrape_config(docs: list[Doc]) -> Doc:
    text = _one(docs, "ConfigMap", "streamrec-prometheus")["data"]["prometheus.yml"]
    config: Doc = yaml.safe_load(text)
    return config


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _discovered_targets(deployment: Doc, pod_ip: str) -> list[dict[str, str]]:
    """What Prometheus pod discovery yields for one pod: one target per container port."""
    template = deployment["spec"]["template"]
    meta = {
        "__meta_kubernetes_namespace": deployment["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": f"{deployment['metadata']['name']}-abc12",
        "__metrics_path__": "/metrics",
        "__scheme__": "http",
        "job": "streamrec-pods",
    }
    for key, value in template["metadata"].get("annotations", {}).items():
        meta[f"__meta_kubernetes_pod_annotation_{_sanitize(key)}"] = str(value)
    for key, value in template["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_pod_label_{_sanitize(key)}"] = str(value)
    targets = []
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            targets.append(
                {
                    **meta,
                    "__address__": f"{pod_ip}:{port['containerPort']}",
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                }
            )
    return targets


def _relabel(labels: dict[str, str], rules: list[Doc]) -> dict[str, str] | None:
    """Prometheus relabelling (keep / drop / replace), regexes anchored as in Prometheus."""
    out = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(out.get(s, "") for s in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if action == "keep" and match is None:
            return None
        if action == "drop" and match is not None:
            return None
        if action == "replace" and match is not None:
            replacement = re.sub(r"\$(\d+)", r"\\g<\1>", rule.get("replacement", "$1"))
            out[rule["target_label"]] = match.expand(replacement)
        assert action in {"keep", "drop", "replace"}, f"unsupported action {action}"
    return out


def test_scrape_annotations_match_the_scrape_config(docs: list[Doc]) -> None:
    config = _scrape_config(docs)
    jobs = [j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j]
    assert len(jobs) == 1
    job = jobs[0]
    (sd,) = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == ["streamrec"]
    for name, deployment in _deployments(docs).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        metrics_port = _ports(_container(deployment))["metrics"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert int(annotations["prometheus.io/port"]) == metrics_port, name
        kept = [
            t
            for t in (
                _relabel(target, job["relabel_configs"])
                for target in _discovered_targets(deployment, "10.1.2.3")
            )
            if t is not None
        ]
        assert len(kept) == 1, f"{name}: expected one scrape target, got {kept}"
        (target,) = kept
        assert target["__address__"] == f"10.1.2.3:{metrics_port}", name
        assert target["__metrics_path__"] == annotations["prometheus.io/path"] == "/metrics"
        component = _pod_labels(deployment)["app.kubernetes.io/component"]
        assert target["job"] == f"streamrec-{component}"
        assert target["pod"].startswith(name)


def test_unannotated_pods_are_not_scraped(docs: list[Doc]) -> None:
    job = _scrape_config(docs)["scrape_configs"][0]
    deployment = _deployments(docs)["streamrec-worker"]
    bare = {
        **deployment,
        "spec": {
            **deployment["spec"],
            "template": {
                **deployment["spec"]["template"],
                "metadata": {**deployment["spec"]["template"]["metadata"], "annotations": {}},
            },
        },
    }
    assert all(
        _relabel(t, job["relabel_configs"]) is None for t in _discovered_targets(bare, "10.0.0.9")
    )


def test_scrape_config_is_the_shared_one_with_pod_discovery(docs: list[Doc]) -> None:
    config = _scrape_config(docs)
    shared = yaml.safe_load(PROMETHEUS.read_text())
    assert config["global"] == shared["global"]
    assert [Path(p).name for p in config["rule_files"]] == shared["rule_files"]
    assert {Path(p).parent for p in config["rule_files"]} == {Path("/etc/prometheus/rules")}
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"], "alerts must go to an Alertmanager"
    assert [j["job_name"] for j in config["scrape_configs"]] == ["streamrec-pods"]


def test_scrape_config_loads_the_alert_rules(docs: list[Doc]) -> None:
    config = _scrape_config(docs)
    assert [Path(p).name for p in config["rule_files"]] == [ALERTS.name]
    assert ALERTS.is_file()
    rules = yaml.safe_load(ALERTS.read_text())
    assert rules["groups"], "alerts.yml has no rule groups"


def test_settings_named_in_the_scaling_guide_exist() -> None:
    names = set(re.findall(r"STREAMREC_[A-Z0-9_]+", SCALING_DOC.read_text()))
    assert names, "docs/scaling.md names no settings"
    for name in names:
        assert name.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, name


def test_the_secret_ships_no_usable_admin_token(docs: list[Doc]) -> None:
    """The Secret's token is empty: a server on the pod IP refuses to start until it is set."""
    secret = _one(docs, "Secret", "streamrec-secrets")
    token = secret["stringData"]["STREAMREC_ADMIN_TOKEN"]
    assert token == ""
    with pytest.raises(ConfigError, match="STREAMREC_ADMIN_TOKEN"):
        check_admin_token(SecretStr(token), _settings(docs).grpc_addr)
