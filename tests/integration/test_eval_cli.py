"""``streamrec eval`` end to end: the installed CLI on generated log files (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl
from tests.support import RunCli, stderr_lines

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write(directory: Path, arms: list[ArmSpec], users: int, **kwargs: object) -> list[str]:
    synth = synthetic_experiment(arms, users=users, **kwargs)  # type: ignore[arg-type]
    exposures = write_jsonl(directory / "exposures.jsonl", synth.exposures)
    outcomes = write_jsonl(directory / "outcomes.jsonl", synth.outcomes)
    return ["--exposures", str(exposures), "--outcomes", str(outcomes)]


def test_validate_exit_codes(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "clean").mkdir()
    clean = _write(
        tmp_path / "clean",
        [ArmSpec("control"), ArmSpec("treatment")],
        2_000,
        organic_per_request=0.1,
    )
    ok = run_cli("eval", "validate", *clean)
    assert ok.returncode == 0, ok.stderr
    assert "result: OK" in ok.stdout

    (tmp_path / "gappy").mkdir()
    gappy = _write(
        tmp_path / "gappy",
        [ArmSpec("control"), ArmSpec("treatment")],
        2_000,
        drop_exposure_share=0.10,
    )
    failed = run_cli("eval", "validate", *gappy, "--json")
    assert failed.returncode == 1
    report = json.loads(failed.stdout)
    assert report["ok"] is False
    assert 0.85 < report["join"]["join_rate"] < 0.95

    exposures = Path(clean[1])
    with exposures.open("ab") as fh:
        bad = orjson.loads(exposures.read_bytes().splitlines()[0])
        bad["items"][0]["rank"] = 0
        fh.write(orjson.dumps(bad) + b"\n")
    lines = exposures.read_bytes().count(b"\n")
    invalid = run_cli("eval", "validate", *clean)
    assert invalid.returncode == 1
    assert (
        f"{exposures}:{lines}: items.0.rank: Input should be greater than or equal to 1"
        in invalid.stdout
    )
    assert run_cli("eval", "validate", *clean, "--allow-invalid").returncode == 0


def test_ab_writes_report_and_chart(run_cli: RunCli, tmp_path: Path) -> None:
    args = _write(tmp_path, [ArmSpec("control"), ArmSpec("treatment", ctr=0.14)], 6_000)
    out = tmp_path / "ab-report"
    result = run_cli("eval", "ab", *args, "--mde", "0.3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "**Decision: SHIP** (treatment)" in result.stdout
    png = (out / "report.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert json.loads((out / "report.json").read_text())["decision"] == "ship"
    assert (out / "report.md").read_text().startswith("# A/B report")

    as_json = run_cli("eval", "ab", *args, "--metric", "conversion", "--out", str(out), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["metric"] == "conversion"


def test_bad_arguments_are_one_line_errors(run_cli: RunCli, tmp_path: Path) -> None:
    missing = run_cli(
        "eval",
        "validate",
        "--exposures",
        str(tmp_path / "nope.jsonl"),
        "--outcomes",
        str(tmp_path / "nope2.jsonl"),
    )
    assert missing.returncode == 2
    assert stderr_lines(missing) == [
        f"streamrec: error: log file not found: {tmp_path / 'nope.jsonl'}"
    ]
    args = _write(tmp_path, [ArmSpec("control"), ArmSpec("treatment")], 300)
    bad_split = run_cli(
        "eval", "ab", *args, "--expected-split", "control=1", "--out", str(tmp_path / "r")
    )
    assert bad_split.returncode == 2
    assert len(stderr_lines(bad_split)) == 1
    assert "expected split" in bad_split.stderr
    bad_control = run_cli("eval", "ab", *args, "--control", "ctl", "--out", str(tmp_path / "r"))
    assert bad_control.returncode == 2
    assert "control variant 'ctl' not in the exposures" in bad_control.stderr


def test_synth_ratings_writes_a_movielens_log(run_cli: RunCli, tmp_path: Path) -> None:
    target = tmp_path / "ml" / "u.data"
    result = run_cli("eval", "synth-ratings", str(target), "--users", "12", "--seed", "3")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in target.read_text(encoding="utf-8").splitlines()]
    assert result.stdout.strip() == f"{len(rows)} ratings written to {target}"
    assert {len(row) for row in rows} == {4}
    assert len({row[0] for row in rows}) == 12  # every user rates (at least 20 each)
    timestamps = [int(row[3]) for row in rows]
    assert timestamps == sorted(timestamps)
    again = tmp_path / "again.data"
    repeat = run_cli("eval", "synth-ratings", str(again), "--users", "12", "--seed", "3")
    assert repeat.returncode == 0, repeat.stderr
    assert again.read_bytes() == target.read_bytes()  # same seed, same file


def test_synth_ratings_bad_arguments(run_cli: RunCli, tmp_path: Path) -> None:
    zero = run_cli("eval", "synth-ratings", str(tmp_path / "u.data"), "--users", "0")
    assert zero.returncode == 2
    assert len(stderr_lines(zero)) == 1 and "--users" in zero.stderr
    assert not (tmp_path / "u.data").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    unwritable = run_cli("eval", "synth-ratings", str(blocker / "u.data"), "--users", "2")
    assert unwritable.returncode == 2
    [line] = stderr_lines(unwritable)
    assert line.startswith(f"streamrec: error: cannot write {blocker / 'u.data'}: ")
