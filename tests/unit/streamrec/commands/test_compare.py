"""``streamrec eval compare`` on hand-made runs, and the intervals in prequential's text."""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.intervals import Interval
from evaluation.metrics import Scores
from evaluation.predictions import PredictionTable, write_predictions
from evaluation.prequential import PrequentialResult
from streamrec.commands.prequential import _render
from tests.support import run_cli, stderr_lines


def _run(tmp_path: Path, name: str, hit_every: int, n: int = 600) -> Path:
    """A run's JSON: ``n`` predictions in sessions of three, a hit every ``hit_every``-th."""
    rows = [
        (p, f"s{p // 3}", "t", (1 if p % hit_every == 0 else None, 2 if p % 5 == 0 else None))
        for p in range(n)
    ]
    written = write_predictions(
        tmp_path / f"{name}.csv", PredictionTable.from_rows(("streamrec", "popularity"), rows)
    )
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"k": 10, "predictions": written}), encoding="utf-8")
    return path


def test_compare_text_json_and_refusal(tmp_path: Path) -> None:
    a, b = _run(tmp_path, "a", 4), _run(tmp_path, "b", 2)
    text = run_cli("eval", "compare", str(a), str(b))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"B − A, B = {b}, A = {a}: 600 predictions, k=10"
    assert lines[1] == (
        "95% intervals: paired percentile bootstrap over 200 users (1,000 resamples, seed 0)"
    )
    hr = next(line for line in lines if line.startswith("streamrec   HR@10"))
    assert "  0.2500  0.5000  +0.2500  [+0." in hr and hr.endswith(" distinguishable from zero")
    same = next(line for line in lines if line.startswith("popularity  HR@10"))
    assert same.endswith("not distinguishable from zero") and "[+0.0000, +0.0000]" in same

    as_json = run_cli("eval", "compare", str(a), str(b), "--json", "--seed", "3")
    assert as_json.returncode == 0, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["intervals"]["seed"] == 3 and payload["predictions"] == 600
    assert payload["streamrec"]["hr"]["diff"] == 0.25
    assert payload["streamrec"]["hr"]["verdict"] == "distinguishable from zero"
    assert payload["popularity"]["ndcg"]["distinguishable"] is False

    short = _run(tmp_path, "short", 2, n=300)
    refused = run_cli("eval", "compare", str(a), str(short), "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    assert stderr_lines(refused) == [
        f"streamrec: error: {a} and {short} do not predict the same events "
        "(different test log, cut or targets): 600 against 300 predictions"
    ]


def test_prequential_text_shows_intervals() -> None:
    scores = Scores(0.68, 0.36, 0.44, 0.93, 100)
    info = {"events": 500, "catalog": 40, "replay_s": 1.0, "events_per_s": 500.0}
    settings = {"protocol": "batch", "targets": "session next item", **info}
    found = {key: Interval(0.6, 0.7) for key in ("hr", "mrr", "ndcg")}
    result = PrequentialResult(
        scores,
        scores,
        20,
        settings,
        intervals={"streamrec": found, "popularity": None},
        interval_info={
            "level": 0.95,
            "method": "percentile bootstrap",
            "unit": "session",
            "units": 1234,
            "resamples": 1000,
            "seed": 0,
        },
        predictions_file={"path": "/tmp/p.csv"},
    )
    lines = _render(result).splitlines()
    assert lines[2].startswith("streamrec   0.6800 [0.6000, 0.7000]  0.3600 [0.6000, 0.7000]")
    assert lines[3].startswith("popularity  0.6800                   0.3600")
    assert lines[4] == (
        "[…]: 95% intervals, percentile bootstrap over 1,234 sessions (1,000 resamples, seed 0)"
    )
    assert lines[5] == "per-prediction results: /tmp/p.csv"
    payload = result.to_dict()
    assert list(payload["streamrec"]) == [
        "hr", "hr_ci", "mrr", "mrr_ci", "ndcg", "ndcg_ci", "coverage", "n",
    ]  # fmt: skip
    assert payload["streamrec"]["hr_ci"] == [0.6, 0.7] and payload["popularity"]["hr_ci"] is None
