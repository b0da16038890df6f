"""``streamrec eval tune`` end to end against the session's Redis, on a small session log.

The log: session chains (item ``c{j}_{i}`` followed by ``c{j}_{i+1}``) with popular detours; the
tuning run starts from a config file with a setting outside the search space
(``ranker_neighbours_per_anchor = 1``), so every trial's value of it differs and is written.
"""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path

from core.settings import Settings
from tests.support import RunCli, stderr_lines

START_TS = 1_400_000_000.0


def _write_log(path: Path, sessions: int = 240) -> Path:
    rng = random.Random(5)
    rows, ts = [], START_TS
    for session in range(1, sessions + 1):
        chain, begin = rng.randrange(10), rng.randrange(3)
        for position in range(begin, begin + rng.randint(2, 4)):
            if rng.random() < 0.3:
                ts += rng.uniform(5, 60)
                rows.append(f"{session}\tp{rng.randrange(4)}\t{ts:.3f}")
            ts += rng.uniform(5, 60)
            rows.append(f"{session}\tc{chain}_{position}\t{ts:.3f}")
        ts += rng.uniform(60, 600)
    path.write_text("SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_tune_writes_a_config_file_that_settings_load_and_resumes(
    run_cli: RunCli, tmp_path: Path, settings: Settings
) -> None:
    log = _write_log(tmp_path / "sessions.tsv")
    start = tmp_path / "start.toml"
    start.write_text("ranker_neighbours_per_anchor = 1\ncovis_top_k = 50\n", encoding="utf-8")
    env = {
        "STREAMREC_REDIS_URL": settings.redis_url,
        "STREAMREC_KEY_PREFIX": settings.key_prefix,
        "STREAMREC_CONFIG_FILE": str(start),
    }
    output = tmp_path / "tuned.toml"
    args = [
        "eval", "tune", str(log), "--format", "sessions", "--holdout-days", "0.2",
        "-k", "5", "--seed", "3", "--output", str(output), "--json",
    ]  # fmt: skip
    done = run_cli(*args, "--trials", "3", env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    progress = [line for line in stderr_lines(done) if line.startswith("trial ")]
    assert [line.split(" (")[0] for line in progress] == ["trial 1/3", "trial 2/3", "trial 3/3"]
    payload = json.loads(done.stdout)
    assert payload["metric"] == "hr" and payload["k"] == 5
    assert payload["study"]["trials_run"] == 3 and payload["study"]["trials_total"] == 3
    storage = Path(payload["study"]["storage"])
    assert storage == tmp_path / "tuned.db" and storage.exists()
    holdout = payload["holdout"]
    assert holdout["predictions"] > 0
    assert holdout["defaults"]["n"] == holdout["best"]["n"] == holdout["predictions"]
    hr = holdout["difference"]["hr"]
    assert hr["diff"] == hr["b"] - hr["a"]
    assert hr["ci"][0] <= hr["diff"] <= hr["ci"][1]
    assert hr["verdict"].endswith("distinguishable from zero")
    for label in ("best", "defaults"):
        assert Path(payload["runs"][label]).exists()

    # the written file: the changed tuned values, plus what the starting file set
    written = tomllib.loads(output.read_text(encoding="utf-8"))
    assert output.read_text(encoding="utf-8").startswith("# Settings tuned by")
    assert written == payload["config_file"]["values"]
    assert written["covis_top_k"] == 50
    assert 10 <= written["ranker_neighbours_per_anchor"] <= 100
    assert set(payload["changed"]) <= set(written)
    assert "ranker_neighbours_per_anchor" in payload["changed"]

    shown = run_cli("config", "--json", env={"STREAMREC_CONFIG_FILE": str(output)})
    assert shown.returncode == 0, shown.stderr
    rows = {row["env"].removeprefix("STREAMREC_").lower(): row for row in json.loads(shown.stdout)}
    for name, value in written.items():
        assert rows[name]["source"] == "file", name
        assert rows[name]["value"] == value, name

    # the same storage: the study resumes (trials add up), the sampler does not restart
    again = run_cli(*args, "--trials", "2", "--sample", "1", env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    # --sample 1 is another question (another study); without it the first one resumes
    assert json.loads(again.stdout)["study"]["trials_total"] == 2
    resumed = run_cli(*args, "--trials", "2", env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    study = json.loads(resumed.stdout)["study"]
    assert study["trials_run"] == 2 and study["trials_total"] == 5


def test_tune_bad_arguments_exit_2_with_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    log = _write_log(tmp_path / "sessions.tsv", sessions=20)
    base = ["eval", "tune", str(log), "--format", "sessions"]
    cases = [
        [*base],  # no --holdout-days
        [*base, "--holdout-days", "0.2", "--metric", "auc"],
        [*base, "--holdout-days", "0.2", "--trials", "0"],
        [*base, "--holdout-days", "-1"],
        [*base, "--holdout-days", "0.2", "--sample", "2"],
        [*base, "--holdout-days", "0.2", "--output", str(tmp_path / "no" / "x.toml")],
        [*base, "--holdout-days", "0.2", "--output", str(tmp_path / "x.json")],
    ]
    for args in cases:
        failed = run_cli(*args)
        assert failed.returncode == 2, (args, failed.stderr)
        (line,) = stderr_lines(failed)
        assert line.startswith("streamrec: error:"), line


def test_prequential_sample_predicts_a_seeded_share_of_sessions(
    run_cli: RunCli, tmp_path: Path, settings: Settings
) -> None:
    log = _write_log(tmp_path / "sessions.tsv")
    env = {"STREAMREC_REDIS_URL": settings.redis_url, "STREAMREC_KEY_PREFIX": settings.key_prefix}
    base = ["eval", "prequential", str(log), "--format", "sessions", "--holdout-days", "0.2"]
    runs = {}
    for sample in (None, "0.5"):
        extra = [] if sample is None else ["--sample", sample]
        done = run_cli(*base, *extra, "-k", "5", "--json", env=env)
        assert done.returncode == 0, done.stderr
        runs[sample] = json.loads(done.stdout)
    assert runs[None]["settings"]["sample"] is None
    assert runs["0.5"]["settings"]["sample"] == 0.5
    # every event is still learned; only some sessions' targets are predicted
    assert runs["0.5"]["settings"]["learned"] == runs[None]["settings"]["learned"]
    assert 0 < runs["0.5"]["streamrec"]["n"] < runs[None]["streamrec"]["n"]
    assert runs["0.5"]["intervals"]["units"] < runs[None]["intervals"]["units"]
