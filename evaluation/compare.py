"""Paired comparison of two prequential runs over the same predictions (``eval compare``).

Each run is the JSON of ``eval prequential --predictions FILE --json``; its ``predictions``
entry names the per-prediction file (and its digest, so a file another run overwrote is
refused). The two files must hold the same predictions — same positions, users and targets
in the same order (the same test log, cut and targets) — and the runs the same k. For each
model and metric: the means of A and B, the difference B − A and its paired bootstrap
interval resampling users (sessions) as the runs' own intervals do
(:func:`evaluation.intervals.paired_difference`); distinguishable from zero when the interval
excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from core.errors import ConfigError
from evaluation.intervals import Interval, paired_difference
from evaluation.predictions import METRICS, PredictionTable, read_predictions

__all__ = ["Comparison", "MetricDifference", "compare_runs"]

DISTINGUISHABLE = "distinguishable from zero"
NOT_DISTINGUISHABLE = "not distinguishable from zero"


@dataclass(frozen=True, slots=True)
class MetricDifference:
    """B − A of one model's metric."""

    model: str
    metric: str
    a: float
    b: float
    interval: Interval

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def verdict(self) -> str:
        return DISTINGUISHABLE if self.interval.excludes_zero else NOT_DISTINGUISHABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "diff": self.diff,
            "ci": self.interval.to_list(),
            "distinguishable": self.interval.excludes_zero,
            "verdict": self.verdict,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every metric's paired difference, and how the intervals were drawn."""

    a: str
    b: str
    k: int
    predictions: int
    unit: str
    units: int
    level: float
    resamples: int
    seed: int
    differences: tuple[MetricDifference, ...]

    def to_dict(self) -> dict[str, Any]:
        models: dict[str, dict[str, Any]] = {}
        for found in self.differences:
            models.setdefault(found.model, {})[found.metric] = found.to_dict()
        return {
            "a": self.a,
            "b": self.b,
            "k": self.k,
            "predictions": self.predictions,
            "intervals": {
                "level": self.level,
                "method": "paired percentile bootstrap",
                "unit": self.unit,
                "units": self.units,
                "resamples": self.resamples,
                "seed": self.seed,
            },
            **models,
        }


def _load(path: Path) -> tuple[dict[str, Any], PredictionTable]:
    """A run's JSON and its per-prediction table."""
    try:
        payload = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("k"), int):
        raise ConfigError(f"{path}: not the JSON of eval prequential --json")
    written = payload.get("predictions")
    if not isinstance(written, dict) or not isinstance(written.get("path"), str):
        raise ConfigError(
            f"{path}: no per-prediction file; run eval prequential with --predictions FILE --json"
        )
    digest = written.get("sha256")
    return payload, read_predictions(Path(written["path"]), digest if digest else None)


def compare_runs(
    a_path: Path, b_path: Path, *, resamples: int, seed: int, level: float
) -> Comparison:
    """B − A of every metric of the models both runs report; ConfigError when misaligned."""
    run_a, table_a = _load(a_path)
    run_b, table_b = _load(b_path)
    if run_a["k"] != run_b["k"]:
        raise ConfigError(
            f"{a_path} has k={run_a['k']} and {b_path} k={run_b['k']}: compare runs of one k"
        )
    why = table_a.misaligned(table_b)
    if why is not None:
        raise ConfigError(
            f"{a_path} and {b_path} do not predict the same events "
            f"(different test log, cut or targets): {why}"
        )
    if not len(table_a):
        raise ConfigError(f"{a_path} and {b_path} hold no prediction to compare")
    models = [model for model in table_a.values if model in table_b.values]
    differences: list[MetricDifference] = []
    for model in models:
        a, b = table_a.values[model], table_b.values[model]
        found = paired_difference(table_a.users, a, b, resamples=resamples, seed=seed, level=level)
        means_a, means_b = a.mean(axis=0), b.mean(axis=0)
        differences.extend(
            MetricDifference(model, key, float(means_a[i]), float(means_b[i]), found[i])
            for i, (key, _) in enumerate(METRICS)
        )
    info = run_a.get("intervals")
    unit = info.get("unit", "user") if isinstance(info, dict) else "user"
    return Comparison(
        a=str(a_path),
        b=str(b_path),
        k=run_a["k"],
        predictions=len(table_a),
        unit=str(unit),
        units=table_a.units,
        level=level,
        resamples=resamples,
        seed=seed,
        differences=tuple(differences),
    )
