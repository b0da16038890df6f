"""Per-prediction tables, their CSV file, and the paired comparison of two runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import ConfigError
from evaluation.compare import DISTINGUISHABLE, NOT_DISTINGUISHABLE, compare_runs
from evaluation.predictions import (
    PredictionRow,
    PredictionTable,
    read_predictions,
    write_predictions,
)
from evaluation.protocol import LEVEL, RESAMPLES

MODELS = ("streamrec", "popularity")


def _rows(n: int, hit_every: int, *, shift: int = 0) -> list[PredictionRow]:
    """``n`` predictions in sessions of four; streamrec hits rank 1 every ``hit_every``-th."""
    return [
        (p + shift, f"s{p // 4}", f"i{p % 7}", (1 if p % hit_every == 0 else None, None))
        for p in range(n)
    ]


def _run(tmp_path: Path, name: str, rows: list[PredictionRow], k: int = 20) -> Path:
    """The JSON of a prequential run whose per-prediction file holds ``rows``."""
    table = PredictionTable.from_rows(MODELS, rows)
    written = write_predictions(tmp_path / f"{name}.csv", table)
    path = tmp_path / f"{name}.json"
    payload: dict[str, Any] = {
        "k": k,
        "intervals": {"unit": "session"},
        "predictions": written,
    }
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def test_table_from_rows_sorted_with_metric_values() -> None:
    rows: list[PredictionRow] = [(7, "u", "b", (None, 2)), (3, "u", "a", (1, 4))]
    table = PredictionTable.from_rows(MODELS, rows)
    assert table.positions.tolist() == [3, 7] and table.targets.tolist() == ["a", "b"]
    assert table.ranks["streamrec"].tolist() == [1, 0]
    assert table.values["streamrec"].tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    assert table.values["popularity"].ravel().tolist() == pytest.approx(
        [1.0, 0.25, 1 / math.log2(5), 1.0, 0.5, 1 / math.log2(3)]
    )
    assert len(table) == 2 and table.units == 1
    found = table.intervals(resamples=50, seed=0, level=LEVEL)
    assert found["popularity"] is not None
    assert found["popularity"]["hr"].to_list() == [1.0, 1.0]  # one unit: no variation
    empty = PredictionTable.from_rows(MODELS, [])
    assert empty.intervals(resamples=50, seed=0, level=LEVEL) == dict.fromkeys(MODELS)


def test_csv_round_trip_and_digest(tmp_path: Path) -> None:
    rows: list[PredictionRow] = [(0, "s,1", 'it"em', (3, None)), (1, "s2", "x", (None, 1))]
    table = PredictionTable.from_rows(MODELS, rows)
    path = tmp_path / "p.csv"
    written = write_predictions(path, table)
    assert written["rows"] == 2 and written["format"] == "csv"
    assert written["path"] == str(path.resolve())
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == (
        "position,user,target,streamrec_rank,streamrec_hit,streamrec_rr,streamrec_ndcg,"
        "popularity_rank,popularity_hit,popularity_rr,popularity_ndcg"
    )
    assert lines[2] == "1,s2,x,,0.0,0.0,0.0,1,1.0,1.0,1.0"
    back = read_predictions(path, written["sha256"])
    assert back.users.tolist() == ["s,1", "s2"] and back.targets.tolist() == ['it"em', "x"]
    for model in MODELS:
        assert np.array_equal(back.values[model], table.values[model])  # repr: exact floats
    assert table.misaligned(back) is None
    path.write_text(path.read_text(encoding="utf-8") + "2,s3,y,,0,0,0,,0,0,0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="changed since its run wrote it"):
        read_predictions(path, written["sha256"])
    assert table.misaligned(read_predictions(path)) == "2 against 3 predictions"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a per-prediction file"):
        read_predictions(tmp_path / "bad.csv")


def test_compare_runs_paired_differences(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", _rows(4000, 3))  # HR 1/3
    b = _run(tmp_path, "b", _rows(4000, 2))  # HR 1/2: agrees with A on every sixth
    same = _run(tmp_path, "same", _rows(4000, 3))
    found = compare_runs(a, b, resamples=RESAMPLES, seed=0, level=LEVEL)
    assert (found.k, found.predictions, found.units, found.unit) == (20, 4000, 1000, "session")
    by_key = {(d.model, d.metric): d for d in found.differences}
    hr = by_key["streamrec", "hr"]
    assert hr.a == pytest.approx(1334 / 4000) and hr.b == pytest.approx(0.5)
    assert hr.diff == pytest.approx(0.5 - 1334 / 4000)
    assert hr.interval.low < hr.diff < hr.interval.high and hr.interval.low > 0
    assert hr.verdict == DISTINGUISHABLE
    assert by_key["popularity", "mrr"].interval.to_list() == [0.0, 0.0]
    assert by_key["popularity", "mrr"].verdict == NOT_DISTINGUISHABLE
    payload = found.to_dict()
    assert payload["streamrec"]["hr"]["distinguishable"] is True
    assert set(payload["streamrec"]) == {"hr", "mrr", "ndcg"}
    assert payload["intervals"]["method"] == "paired percentile bootstrap"
    assert payload["intervals"]["resamples"] == RESAMPLES
    nothing = compare_runs(a, same, resamples=RESAMPLES, seed=0, level=LEVEL)
    assert all(d.verdict == NOT_DISTINGUISHABLE and d.diff == 0 for d in nothing.differences)


def test_compare_refuses_runs_that_do_not_align(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", _rows(40, 3))
    shorter = _run(tmp_path, "short", _rows(36, 3))
    shifted = _run(tmp_path, "shift", _rows(40, 3, shift=1))
    other_k = _run(tmp_path, "k10", _rows(40, 3), k=10)
    with pytest.raises(ConfigError, match=r"do not predict the same events .*40 against 36"):
        compare_runs(a, shorter, resamples=10, seed=0, level=LEVEL)
    with pytest.raises(ConfigError, match="prediction 1 has position 0 against 1"):
        compare_runs(a, shifted, resamples=10, seed=0, level=LEVEL)
    with pytest.raises(ConfigError, match=r"k=20 and .* k=10"):
        compare_runs(a, other_k, resamples=10, seed=0, level=LEVEL)
    bare = tmp_path / "bare.json"
    bare.write_text('{"k": 20, "predictions": null}', encoding="utf-8")
    with pytest.raises(ConfigError, match="no per-prediction file; run eval prequential"):
        compare_runs(a, bare, resamples=10, seed=0, level=LEVEL)
    (tmp_path / "junk.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="not JSON"):
        compare_runs(tmp_path / "junk.json", a, resamples=10, seed=0, level=LEVEL)
    with pytest.raises(ConfigError, match="cannot read"):
        compare_runs(tmp_path / "missing.json", a, resamples=10, seed=0, level=LEVEL)
