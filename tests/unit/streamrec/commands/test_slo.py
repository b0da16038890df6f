"""``streamrec slo rules`` prints / writes the generated rules; ``slo budget`` says why unknown."""

from __future__ import annotations

from pathlib import Path

import yaml

from monitoring.slo import BEGIN, Objectives, rule_groups
from tests.support import REPO, run_cli, stderr_lines


def test_rules_prints_the_groups_of_the_effective_settings() -> None:
    result = run_cli("slo", "rules", env={"STREAMREC_SLO_LATENCY_OBJECTIVE": "0.95"}, timeout=60)
    assert result.returncode == 0, result.stderr
    doc = yaml.safe_load(result.stdout)
    assert doc == {"groups": rule_groups(Objectives(latency=0.95))}


def test_rules_write_replaces_the_section(tmp_path: Path) -> None:
    target = tmp_path / "alerts.yml"
    target.write_text((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    result = run_cli(
        "slo", "rules", "--write", str(target), env={"STREAMREC_SLO_FRESHNESS_MAX_AGE_S": "120"}
    )
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert text.count(BEGIN) == 1 and "> bool 120" in text and "> bool 300" not in text
    groups = yaml.safe_load(text)["groups"]
    assert [g["name"] for g in groups][-2:] == ["streamrec-slo", "streamrec-slo-budget"]


def test_bad_objectives_and_files_are_one_line(tmp_path: Path) -> None:
    result = run_cli("slo", "rules", env={"STREAMREC_SLO_LATENCY_THRESHOLD_S": "0.04"})
    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert line.startswith("streamrec: error: ") and "bucket bound" in line
    result = run_cli("slo", "rules", "--write", str(tmp_path / "missing.yml"))
    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert line.startswith("streamrec: error: cannot update")


def test_budget_without_prometheus_says_so() -> None:
    result = run_cli("slo", "budget", env={"STREAMREC_PROMETHEUS_URL": None})
    assert result.returncode == 1
    assert "unknown: no Prometheus configured (set STREAMREC_PROMETHEUS_URL)" in result.stdout
