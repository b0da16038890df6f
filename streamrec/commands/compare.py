"""``streamrec eval compare A.json B.json``: paired difference of two prequential runs.

A thin adapter over :func:`evaluation.compare.compare_runs`. Exit 0 whatever the verdicts;
2 with a one-line error on unreadable files or runs whose predictions do not align.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from evaluation.protocol import LEVEL, RESAMPLES, SEED

if TYPE_CHECKING:
    from evaluation.compare import Comparison

_LABELS = {"hr": "HR", "mrr": "MRR", "ndcg": "NDCG"}


def _render(found: Comparison) -> str:
    lines = [
        f"B − A, B = {found.b}, A = {found.a}: {found.predictions:,} predictions, k={found.k}",
        f"{found.level:.0%} intervals: paired percentile bootstrap over {found.units:,} "
        f"{found.unit}s ({found.resamples:,} resamples, seed {found.seed})",
        f"{'':12}{'metric':8}{'A':>8}{'B':>8}{'B − A':>9}  {'interval':20}  verdict",
    ]
    for row in found.differences:
        low, high = row.interval.low, row.interval.high
        lines.append(
            f"{row.model:12}{_LABELS[row.metric] + f'@{found.k}':8}{row.a:8.4f}{row.b:8.4f}"
            f"{row.diff:+9.4f}  {f'[{low:+.4f}, {high:+.4f}]':20}  {row.verdict}"
        )
    return "\n".join(lines)


def compare(
    a: Annotated[Path, typer.Argument(help="JSON of the first run (A).")],
    b: Annotated[Path, typer.Argument(help="JSON of the second run (B).")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = SEED,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """B − A of HR, MRR and NDCG over the same predictions, with paired intervals.

    A and B: the JSON outputs of two `eval prequential --predictions FILE --json` runs over
    the same test log. Each difference comes with its paired bootstrap interval (resampling
    the users, or sessions, both runs share) and says whether it is distinguishable from zero.
    """
    from evaluation.compare import compare_runs  # numpy: only when comparing

    found = compare_runs(a, b, resamples=RESAMPLES, seed=seed, level=LEVEL)
    if as_json:
        typer.echo(orjson.dumps(found.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(_render(found))
