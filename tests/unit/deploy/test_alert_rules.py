"""Prometheus rules agree with the metric names and the settings (the Grafana dashboard:
test_grafana_dashboard.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from core.settings import Settings
from monitoring.slo import BEGIN, END, Objectives, render_groups
from schemas.metrics import SERIES_NAMES, SLO_BUDGET_REMAINING, SLOS
from tests.support import REPO

ROOT = REPO
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
K8S_PROMETHEUS = ROOT / "deploy" / "k8s" / "prometheus-scrape.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
#: ``runbook_url`` of a rule: the external label ``runbook_base`` + the runbook's file name
RUNBOOK_URL_RE = re.compile(r"\{\{ \$externalLabels\.runbook_base \}\}/([a-z0-9-]+\.md)")
PROMTOOL = shutil.which("promtool")

METRIC_RE = re.compile(r"\bstreamrec_[a-z0-9_]+")
#: recording rules (level:metric:operations)
RECORDED_RE = re.compile(r"\bstreamrec:[a-z0-9_]+:[a-z0-9_]+")
SELECTOR_RE = re.compile(r"\b(streamrec_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING_RE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
COMPARISON_RE = re.compile(r"(?:>=|<=|>|<)\s*([0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)")
RANGE_RE = re.compile(r"\[([0-9]+[smhd])\]")
OFFSET_RE = re.compile(r"\boffset\s+([0-9]+[smhd])")
#: Labels every series has (added by Prometheus) plus the histogram bucket label.
AMBIENT_LABELS = {"instance", "job", "le"}


def seconds(duration: str) -> float:
    match = re.fullmatch(r"([0-9]+)([smhd])", duration)
    assert match, f"bad duration {duration!r}"
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def default(name: str) -> Any:
    return Settings.model_fields[name].default


def check_expr(expr: str, where: str, recorded: frozenset[str] = frozenset()) -> None:
    """Every metric is known, every label used belongs to the metrics of the expression.

    An expression over recording rules only (the SLO alerts) must use rules in ``recorded``.
    """
    names = set(METRIC_RE.findall(expr))
    uses = set(RECORDED_RE.findall(expr))
    assert uses <= recorded, f"{where}: unknown recording rules {sorted(uses - recorded)}"
    if uses and not names:
        return
    assert names, f"{where}: expression mentions no streamrec metric: {expr}"
    unknown = names - set(SERIES_NAMES)
    assert not unknown, f"{where}: unknown metrics {sorted(unknown)}"
    for metric, matchers in SELECTOR_RE.findall(expr):
        for label in MATCHER_RE.findall(matchers):
            bucket = label == "le" and metric.endswith("_bucket")
            assert bucket or label in SERIES_NAMES[metric].labels, (
                f"{where}: {metric} has no {label}"
            )
    known = AMBIENT_LABELS.union(*(SERIES_NAMES[n].labels for n in names))
    for group in GROUPING_RE.findall(expr):
        for label in filter(None, (x.strip() for x in group.split(","))):
            assert label in known, f"{where}: label {label!r} is not on any metric used"


# --- alert rules --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and set(doc) == {"groups"}
    groups: list[dict[str, Any]] = doc["groups"]
    group_names = [g["name"] for g in groups]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    for group in groups:
        assert set(group) - {"interval"} == {"name", "rules"} and group["rules"], group["name"]
    return groups


@pytest.fixture(scope="module")
def rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerting rules (recording rules are in :func:`records`)."""
    return [r for g in groups for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def records(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"] if "record" in r]


def hand_written(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules with a literal threshold of a monitoring setting (not the generated SLO rules)."""
    return [r for r in rules if "objective_setting" not in r["annotations"]]


def test_rule_structure(rules: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    recorded = frozenset(r["record"] for r in records)
    for record in records:
        assert set(record) - {"labels"} == {"record", "expr"}, record["record"]
        assert RECORDED_RE.fullmatch(record["record"]), record["record"]
        check_expr(record["expr"], record["record"], recorded)
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"Streamrec[A-Za-z0-9]+", rule["alert"])
        assert rule["labels"]["severity"] in {"warn", "crit"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        seconds(rule["for"])
        check_expr(rule["expr"], rule["alert"], recorded)


def test_slo_rules_are_generated_from_the_settings() -> None:
    """The SLO section of alerts.yml is exactly what `streamrec slo rules` makes of the
    settings' defaults (regenerate: streamrec slo rules --write deploy/prometheus/alerts.yml)."""
    text = RULES.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END) + 1
    assert text[start:end] == render_groups(Objectives()), (
        "alerts.yml's SLO rules differ from the settings: run "
        "`streamrec slo rules --write deploy/prometheus/alerts.yml`"
    )


def test_slo_alerts_cover_every_slo_with_both_burns(
    rules: list[dict[str, Any]], records: list[dict[str, Any]]
) -> None:
    slo_alerts = [r for r in rules if "objective_setting" in r["annotations"]]
    pairs = {(r["annotations"]["objective_setting"], r["labels"]["burn"]) for r in slo_alerts}
    assert pairs == {(f"slo_{s}_objective", b) for s in SLOS for b in ("fast", "slow")}
    for rule in slo_alerts:
        objective = default(rule["annotations"]["objective_setting"])
        assert f"(1 - {objective:g})" in rule["expr"], rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith("/slo-burn.md")
    budgets = {r["labels"]["slo"] for r in records if r["record"] == SLO_BUDGET_REMAINING}
    assert budgets == set(SLOS)


def test_every_slo_alert_has_a_burn_rate_unit_test(rules: list[dict[str, Any]]) -> None:
    """alerts_test.yml makes each SLO alert fire on a series that burns its budget, and checks
    it silent at another time or on a series within budget (promtool runs them below)."""
    cases = [
        case
        for group in yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
        for case in group.get("alert_rule_test", [])
    ]
    for rule in rules:
        if "objective_setting" not in rule["annotations"]:
            continue
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']}: no test fires it"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']}: never checked silent"


def test_rule_thresholds_equal_the_settings_defaults(rules: list[dict[str, Any]]) -> None:
    min_duration = default("alert_min_duration_s")
    checked = set()
    for rule in hand_written(rules):
        expr, notes = rule["expr"], rule["annotations"]
        compared = {float(x) for x in COMPARISON_RE.findall(expr)}
        setting = notes.get("threshold_setting")
        if setting is None:  # invariants: "any empty answer", "any drop", absent metrics
            assert compared <= {0.0}, rule["alert"]
            continue
        name, _, factor = setting.partition("*")
        value = default(name.strip()) * (float(factor) if factor else 1.0)
        assert value in compared, f"{rule['alert']}: {setting} = {value} not in {compared}"
        if name.strip() == "drift_volume_ratio":
            assert 1 / value in compared, "the volume rule alerts both ways"
        if "guard_setting" in notes:
            assert default(notes["guard_setting"]) in compared, rule["alert"]
        assert seconds(rule["for"]) == min_duration, rule["alert"]
        checked.add(name.strip())
    assert checked >= {
        "lag_warn",
        "lag_crit",
        "freshness_warn_s",
        "freshness_crit_s",
        "drift_volume_ratio",
        "drift_mix_psi",
        "drift_items_js",
        "drift_coldstart_delta",
        "drift_ctr_rel_drop",
        "deadletter_rate_warn",
        "deadletter_rate_crit",
        "serving_p99_warn_s",
        "serving_p99_crit_s",
        "event_lag_p99_warn_s",
        "event_lag_p99_crit_s",
    }


#: rules whose range is their own, not the drift windows: Redis errors resolve a minute after
#: the last error (a 5-minute window kept an outage that was over paging for five minutes)
OWN_WINDOWS_S = {"StreamrecServingRedisErrors": 60.0}


def test_rule_windows_equal_the_drift_windows(rules: list[dict[str, Any]]) -> None:
    window = default("drift_window_s")
    reference = window * default("drift_reference_windows")
    for rule in hand_written(rules):
        allowed = {window, reference, OWN_WINDOWS_S.get(rule["alert"], window)}
        for rng in RANGE_RE.findall(rule["expr"]):
            assert seconds(rng) in allowed, f"{rule['alert']}: [{rng}]"
        for off in OFFSET_RE.findall(rule["expr"]):
            assert seconds(off) == window, rule["alert"]


def test_required_alerts_exist(rules: list[dict[str, Any]]) -> None:
    exprs = {r["alert"]: r["expr"] for r in rules}
    needed = {
        "streamrec_consumer_lag": 2,
        "streamrec_newest_event_age_seconds": 2,
        "streamrec_serving_empty_answers_total": 1,
        "streamrec_serving_latency_seconds_bucket": 2,
        "streamrec_exposure_dropped_total": 1,
        "streamrec_deadletter_total": 2,
    }
    for metric, count in needed.items():
        assert sum(metric in e for e in exprs.values()) >= count, metric
    for signal in ("event_mix_psi", "items_js", "coldstart_delta", "ctr_rel_drop"):
        assert any(f'signal="{signal}"' in e for e in exprs.values()), signal
    # silence alerts watch exactly the freshness topics
    topic_sets = re.findall(
        r'streamrec_newest_event_age_seconds\{topic=~"([^"]*)"\}', " ".join(exprs.values())
    )
    assert topic_sets
    assert all(set(t.split("|")) == set(default("freshness_topics")) for t in topic_sets)


# --- runbook links ------------------------------------------------------------------------------
def runbook_base(prometheus_yml: str) -> str:
    config = yaml.safe_load(prometheus_yml)
    base = config["global"]["external_labels"]["runbook_base"]
    assert isinstance(base, str)
    return base


def test_every_rule_links_an_existing_runbook(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        url = rule["annotations"].get("runbook_url")
        assert url, f"{rule['alert']}: no runbook_url annotation"
        match = RUNBOOK_URL_RE.fullmatch(url)
        assert match, f"{rule['alert']}: runbook_url {url!r} is not runbook_base + /NAME.md"
        assert (RUNBOOKS / match.group(1)).is_file(), f"{rule['alert']}: {match.group(1)}"
    index = (RUNBOOKS / "README.md").read_text(encoding="utf-8")
    for page in RUNBOOKS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/runbooks/README.md does not list {page.name}"


def test_runbook_base_is_set_where_the_rules_are_loaded() -> None:
    """docker-compose's and the Kubernetes Prometheus set the same absolute base; the
    promtool unit tests expand the links with it."""
    base = runbook_base(PROMETHEUS.read_text(encoding="utf-8"))
    assert re.fullmatch(r"https://[^/\s]+(/[^\s]*)?[^/]", base), base
    k8s = next(
        d
        for d in yaml.safe_load_all(K8S_PROMETHEUS.read_text(encoding="utf-8"))
        if d["kind"] == "ConfigMap"
    )
    assert runbook_base(k8s["data"]["prometheus.yml"]) == base
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
    for group in tests:
        assert group.get("external_labels") == {"runbook_base": base}, group["name"]
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts", []):
                url = alert["exp_annotations"]["runbook_url"]
                assert url.startswith(base + "/"), (group["name"], case["alertname"])


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    assert PROMTOOL is not None
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TEST)]):
        done = subprocess.run(
            [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_check_expr_rejects_unknown_names_and_labels() -> None:
    with pytest.raises(AssertionError, match="unknown"):
        check_expr("rate(streamrec_nope_total[5m])", "t")
    with pytest.raises(AssertionError, match="has no method"):
        check_expr('streamrec_consumer_lag{method="x"}', "t")
    with pytest.raises(AssertionError, match="not on any metric"):
        check_expr("sum by (method) (streamrec_consumer_lag)", "t")
    check_expr('sum by (topic, le) (rate(streamrec_event_lag_seconds_bucket{topic="a"}[5m]))', "t")
