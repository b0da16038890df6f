"""``streamrec eval``: validate exported event logs and analyse A/B experiments.

Exit codes: 0 success; 1 ``validate`` found a failing check (invalid lines unless
``--allow-invalid``, conflicting duplicate request_ids, join rate below the floor);
2 bad arguments or unreadable files (one-line error). ``ab`` exits 0 whatever it decides:
the decision is data, printed and written to the report directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.errors import ConfigError
from evaluation import (
    AbConfig,
    Correction,
    Metric,
    parse_split,
    read_logs,
    render_markdown,
    render_validation,
    validate_logs,
    write_report,
)
from evaluation.report import to_json
from streamrec.commands.compare import compare
from streamrec.commands.prequential import prequential
from streamrec.commands.tune import tune

app = typer.Typer(
    help="Validate exported exposure/outcome logs and analyse A/B experiments.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

Exposures = Annotated[
    Path, typer.Option("--exposures", help="exposure.v1 JSON lines (streamrec export).")
]
Outcomes = Annotated[
    Path, typer.Option("--outcomes", help="outcome.v1 JSON lines (streamrec export).")
]
JoinFloor = Annotated[
    float,
    typer.Option(
        "--join-floor",
        min=0.0,
        max=1.0,
        help="Lowest acceptable share of request-attributed outcomes that join an exposure.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

app.command("prequential")(prequential)
app.command("compare")(compare)
app.command("tune")(tune)


@app.command()
def validate(
    exposures: Exposures,
    outcomes: Outcomes,
    join_floor: JoinFloor = 0.95,
    allow_invalid: Annotated[
        bool, typer.Option("--allow-invalid", help="Report invalid lines without failing.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Check logs: schema per line, duplicate request_ids, time order, outcome join rate.

    Exits 1 when a line is invalid (unless --allow-invalid), when request_ids are reused with
    different content, or when the join rate is below --join-floor.
    """
    report = validate_logs(
        read_logs(exposures, outcomes), join_floor=join_floor, allow_invalid=allow_invalid
    )
    typer.echo(to_json(report.to_dict()) if as_json else render_validation(report), nl=as_json)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def ab(
    exposures: Exposures,
    outcomes: Outcomes,
    metric: Annotated[
        Metric, typer.Option("--metric", help="ctr | conversion | revenue (per request).")
    ] = Metric.CTR,
    control: Annotated[
        str | None,
        typer.Option(
            "--control",
            help="Control variant name (default: the holdback arm when the logs hold one, "
            "else 'control').",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level.")] = 0.05,
    mde: Annotated[
        float, typer.Option("--mde", help="Relative minimum detectable effect, e.g. 0.05.")
    ] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Required power at the MDE.")] = 0.8,
    expected_split: Annotated[
        str | None,
        typer.Option(
            "--expected-split",
            help="Designed split, e.g. control=0.5,treatment=0.5 (default: equal split).",
        ),
    ] = None,
    correction: Annotated[
        Correction, typer.Option("--correction", help="Multiple-comparison correction.")
    ] = Correction.BH,
    srm_alpha: Annotated[
        float, typer.Option("--srm-alpha", help="Sample-ratio-mismatch significance level.")
    ] = 0.001,
    join_floor: JoinFloor = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples (revenue).")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for report.md, report.json, report.png.")
    ] = Path("ab-report"),
    as_json: AsJson = False,
) -> None:
    """Compare variants on a metric, check trust and guardrails, decide ship/hold/rollback."""
    config = AbConfig(
        metric=metric,
        control=control or "control",
        prefer_holdback=control is None,
        alpha=alpha,
        mde=mde,
        power=power,
        expected_split=parse_split(expected_split) if expected_split else None,
        correction=correction,
        srm_alpha=srm_alpha,
        join_floor=join_floor,
        n_boot=n_boot,
        seed=seed,
    )
    from evaluation.ab import analyze  # statsmodels: imported only when analysing

    result = analyze(read_logs(exposures, outcomes), config)
    try:
        paths = write_report(result, out)
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    if as_json:
        typer.echo(to_json(result.to_dict()))
    else:
        typer.echo(render_markdown(result, chart=str(paths["png"])), nl=False)
        typer.echo(f"\nreport written to {out}/ ({', '.join(p.name for p in paths.values())})")


@app.command("synth-ratings")
def synth_ratings(
    out: Annotated[Path, typer.Argument(help="File to write (tab-separated u.data).")],
    users: Annotated[
        int, typer.Option("--users", min=1, help="Users (MovieLens 100k has 943).")
    ] = 943,
    items: Annotated[
        int, typer.Option("--items", min=10, help="Items (MovieLens 100k has 1,682).")
    ] = 1682,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same file.")] = 7,
) -> None:
    """Write a synthetic MovieLens-format ratings log with a planted taste structure.

    No MovieLens file ships offline; this stand-in has MovieLens 100k's shape (see
    evaluation/synth_ratings.py) for `streamrec eval prequential --format movielens`.
    """
    from evaluation.synth_ratings import RatingsSpec, write_udata  # numpy: only when asked

    try:
        rows = write_udata(out, RatingsSpec(users=users, items=items, seed=seed))
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from exc
    typer.echo(f"{rows} ratings written to {out}")
