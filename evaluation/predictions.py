"""Per-prediction results of a prequential run: the table, its intervals, its CSV file.

One row per prediction, keyed by the event's position in the replayed log (the test log with
``--test`` / ``--holdout-days``: its index after loading, time order, unparsable lines
skipped), its user (a session log's user is the session) and its target item; per model the
target's rank (empty on a miss), hit flag, reciprocal rank and NDCG gain at k. The user is the
bootstrap's resampling unit (:mod:`evaluation.intervals`).

File format (``eval prequential --predictions FILE``): CSV, UTF-8, a header row, rows sorted
by position; columns ``position,user,target`` then ``<model>_rank,<model>_hit,<model>_rr,
<model>_ndcg`` for each model (``streamrec``, ``popularity``). ``eval compare`` reads the
``_hit``/``_rr``/``_ndcg`` columns of every model, so another tool's output in this shape
can be compared too.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import ConfigError
from evaluation.intervals import Interval, intervals

__all__ = ["METRICS", "PredictionRow", "PredictionTable", "read_predictions", "write_predictions"]

#: per-prediction value columns, in the order of :meth:`PredictionTable.values`: (JSON key, CSV)
METRICS: tuple[tuple[str, str], ...] = (("hr", "hit"), ("mrr", "rr"), ("ndcg", "ndcg"))
_KEYS = ("position", "user", "target")

#: (position, user, target, rank per model: None on a miss)
PredictionRow = tuple[int, str, str, tuple[int | None, ...]]


def _values(rank: int | None) -> tuple[float, float, float]:
    """Hit flag, reciprocal rank and NDCG gain of a 1-based rank (zeros on a miss)."""
    if rank is None:
        return 0.0, 0.0, 0.0
    return 1.0, 1.0 / rank, 1.0 / math.log2(rank + 1)


@dataclass(frozen=True, slots=True)
class PredictionTable:
    """The predictions of one run, sorted by position."""

    positions: npt.NDArray[np.int64]
    users: npt.NDArray[np.str_]
    targets: npt.NDArray[np.str_]
    #: model → (predictions, len(METRICS)) per-prediction values
    values: Mapping[str, npt.NDArray[np.float64]]
    #: model → target ranks (0 on a miss); empty when read from a file
    ranks: Mapping[str, npt.NDArray[np.int64]]

    @classmethod
    def from_rows(cls, models: Sequence[str], rows: Iterable[PredictionRow]) -> PredictionTable:
        ordered = sorted(rows, key=lambda row: row[0])
        ranks = {
            model: np.array([row[3][i] or 0 for row in ordered], dtype=np.int64)
            for i, model in enumerate(models)
        }
        values = {
            model: np.array([_values(row[3][i]) for row in ordered], dtype=np.float64).reshape(
                -1, len(METRICS)
            )
            for i, model in enumerate(models)
        }
        return cls(
            np.array([row[0] for row in ordered], dtype=np.int64),
            np.array([row[1] for row in ordered], dtype=np.str_),
            np.array([row[2] for row in ordered], dtype=np.str_),
            values,
            ranks,
        )

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def units(self) -> int:
        """Distinct users (sessions): the bootstrap's units."""
        return int(np.unique(self.users).shape[0])

    def intervals(
        self, *, resamples: int, seed: int, level: float
    ) -> dict[str, dict[str, Interval] | None]:
        """Per model, each metric's bootstrap interval resampling users; None without rows.

        All models are resampled together (the same drawn users), in one pass.
        """
        models = list(self.values)
        if not len(self):
            return dict.fromkeys(models)
        found = intervals(
            self.users,
            np.hstack([self.values[model] for model in models]),
            resamples=resamples,
            seed=seed,
            level=level,
        )
        width = len(METRICS)
        return {
            model: {key: found[m * width + i] for i, (key, _) in enumerate(METRICS)}
            for m, model in enumerate(models)
        }

    def misaligned(self, other: PredictionTable) -> str | None:
        """Why ``other`` does not predict the same events as this table (None when it does)."""
        if len(self) != len(other):
            return f"{len(self)} against {len(other)} predictions"
        for name, mine, theirs in (
            ("position", self.positions, other.positions),
            ("user", self.users, other.users),
            ("target", self.targets, other.targets),
        ):
            differ = np.flatnonzero(mine != theirs)
            if differ.size:
                row = int(differ[0])
                return f"prediction {row + 1} has {name} {mine[row]} against {theirs[row]}"
        return None


def write_predictions(path: Path, table: PredictionTable) -> dict[str, Any]:
    """Write ``table`` as CSV to ``path``; returns what the run's JSON records about it."""
    models = list(table.values)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [*_KEYS, *(f"{m}_{col}" for m in models for col in ("rank", *(c for _, c in METRICS)))]
    )
    for row in range(len(table)):
        cells: list[object] = [
            int(table.positions[row]),
            str(table.users[row]),
            str(table.targets[row]),
        ]
        for model in models:
            rank = int(table.ranks[model][row]) if table.ranks else 0
            cells.append(rank or "")
            cells.extend(repr(float(v)) for v in table.values[model][row])
        writer.writerow(cells)
    data = buffer.getvalue().encode("utf-8")
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return {
        "path": str(path.resolve()),
        "format": "csv",
        "rows": len(table),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def read_predictions(path: Path, sha256: str | None = None) -> PredictionTable:
    """Read a file of :func:`write_predictions`; ``sha256``: the digest it must have."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ConfigError(f"{path} changed since its run wrote it (another run overwrote it?)")
    try:
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        header = next(reader, [])
        models = [c.removesuffix("_hit") for c in header if c.endswith("_hit")]
        if header[: len(_KEYS)] != list(_KEYS) or not models:
            raise ValueError(f"expected the columns {','.join(_KEYS)} and <model>_hit, …")
        keys = [header.index(key) for key in _KEYS]
        columns = {m: [header.index(f"{m}_{c}") for _, c in METRICS] for m in models}
        rows = list(reader)
        positions = np.array([int(row[keys[0]]) for row in rows], dtype=np.int64)
        values = {
            m: np.array([[float(row[i]) for i in cols] for row in rows], dtype=np.float64).reshape(
                -1, len(METRICS)
            )
            for m, cols in columns.items()
        }
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a per-prediction file of eval prequential ({exc})") from exc
    return PredictionTable(
        positions,
        np.array([row[keys[1]] for row in rows], dtype=np.str_),
        np.array([row[keys[2]] for row in rows], dtype=np.str_),
        values,
        {},
    )
