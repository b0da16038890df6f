"""evaluation.report and the ``eval`` typer group (in process; the subprocess run is in
tests/integration/test_eval_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluation import AbConfig, AbResult, analyze, read_logs, render_markdown, write_report
from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl
from streamrec.commands.evaluate import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def log_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("eval-logs")
    arms = [ArmSpec("control"), ArmSpec("treatment", ctr=0.14)]
    synth = synthetic_experiment(arms, users=6_000, organic_per_request=0.1)
    return (
        write_jsonl(directory / "exposures.jsonl", synth.exposures),
        write_jsonl(directory / "outcomes.jsonl", synth.outcomes),
    )


@pytest.fixture(scope="module")
def result(log_paths: tuple[Path, Path]) -> AbResult:
    return analyze(read_logs(*log_paths), AbConfig(mde=0.3))


def test_markdown_leads_with_the_decision(result: AbResult) -> None:
    text = render_markdown(result, chart="report.png")
    lines = text.splitlines()
    assert lines[0].startswith("# A/B report")
    assert lines[2] == "**Decision: SHIP** (treatment)"
    assert lines[4].startswith("- treatment: significant improvement of ctr")
    assert "| control |" in text
    assert "| treatment | latency_p95_ms |" in text
    assert "sample ratio (users)" in text
    assert text.rstrip().endswith("![ctr per variant](report.png)")


def test_write_report_writes_png_markdown_and_strict_json(result: AbResult, tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "out")
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    assert paths["png"].stat().st_size > 5_000
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["decision"] == "ship"
    assert data["winner"] == "treatment"
    assert data["srm"]["detected"] is False
    assert {v["name"] for v in data["variants"]} == {"control", "treatment"}
    assert data["config"]["expected_split"] == {"control": 0.5, "treatment": 0.5}
    assert "**Decision: SHIP**" in paths["md"].read_text(encoding="utf-8")


def test_cli_validate_clean_exits_zero(log_paths: tuple[Path, Path]) -> None:
    exposures, outcomes = log_paths
    res = CliRunner().invoke(
        app, ["validate", "--exposures", str(exposures), "--outcomes", str(outcomes)]
    )
    assert res.exit_code == 0, res.output
    assert "result: OK" in res.output
    res = CliRunner().invoke(
        app, ["validate", "--exposures", str(exposures), "--outcomes", str(outcomes), "--json"]
    )
    assert res.exit_code == 0
    assert json.loads(res.output)["join"]["join_rate"] == 1.0


def test_cli_validate_fails_on_missing_exposures(tmp_path: Path) -> None:
    synth = synthetic_experiment(
        [ArmSpec("control"), ArmSpec("treatment")], users=2_000, drop_exposure_share=0.1
    )
    exposures = write_jsonl(tmp_path / "e.jsonl", synth.exposures)
    outcomes = write_jsonl(tmp_path / "o.jsonl", synth.outcomes)
    args = ["validate", "--exposures", str(exposures), "--outcomes", str(outcomes)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1
    assert "join rate" in res.output
    assert CliRunner().invoke(app, [*args, "--join-floor", "0.8"]).exit_code == 0


def test_cli_ab_writes_the_report(log_paths: tuple[Path, Path], tmp_path: Path) -> None:
    exposures, outcomes = log_paths
    out = tmp_path / "report"
    res = CliRunner().invoke(
        app,
        [
            "ab",
            "--exposures",
            str(exposures),
            "--outcomes",
            str(outcomes),
            "--mde",
            "0.3",
            "--expected-split",
            "control=0.5,treatment=0.5",
            "--correction",
            "bonferroni",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["decision"] == "ship"
    assert (out / "report.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "report.md").is_file()


def test_cli_rejects_bad_arguments(log_paths: tuple[Path, Path], tmp_path: Path) -> None:
    exposures, outcomes = log_paths
    res = CliRunner().invoke(
        app,
        ["ab", "--exposures", str(exposures), "--outcomes", str(outcomes), "--metric", "clicks"],
    )
    assert res.exit_code == 2
    res = CliRunner().invoke(
        app,
        [
            "ab",
            "--exposures",
            str(exposures),
            "--outcomes",
            str(outcomes),
            "--expected-split",
            "control",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code != 0
    assert "expected split like" in str(res.exception)
