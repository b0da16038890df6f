"""Rendering of evaluation results: markdown, JSON, a PNG chart, and the validation table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from evaluation.ab_model import AbResult, Metric
from evaluation.logs import ValidationReport

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
REPORT_PNG = "report.png"


def _clean(obj: Any) -> Any:
    """Replace non-finite floats by None so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def to_json(data: dict[str, Any]) -> str:
    """Strict, indented JSON."""
    return json.dumps(_clean(data), indent=2, allow_nan=False, ensure_ascii=False)


def _value(metric: Metric, value: float) -> str:
    return f"{value:.3f}" if metric is Metric.REVENUE else f"{value:.2%}"


def _diff(metric: Metric, value: float) -> str:
    """A difference: absolute for revenue, in percentage points for rates."""
    return f"{value:+.4f}" if metric is Metric.REVENUE else f"{100 * value:+.2f} pp"


def _opt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(result: AbResult, chart: str | None = None) -> str:
    """The experiment report as markdown: decision and reasons first, then the evidence."""
    m = result.metric
    level = f"{1 - float(result.config['alpha']):.0%}"
    winner = f" ({result.winner})" if result.winner else ""
    out = [
        f"# A/B report — metric `{m}`, control `{result.control}`",
        "",
        f"**Decision: {result.decision.upper()}**{winner}",
        "",
    ]
    out += [f"- {reason}" for reason in result.reasons]
    out += ["", "## Variants", ""]
    rows = [
        [
            v.name,
            str(v.requests),
            str(v.users),
            _value(m, v.value),
            f"[{_value(m, v.ci_low)}, {_value(m, v.ci_high)}]",
            f"{v.items_ctr:.2%}",
            f"{v.revenue_total / v.requests:.3f}",
            _opt(v.latency_p95_ms, ".1f"),
            f"{v.fallback_share:.2%}",
            f"{v.error_share:.2%}",
            f"{v.empty_share:.2%}",
        ]
        for v in result.variants
    ]
    out += _table(
        [
            "variant",
            "requests",
            "users",
            str(m),
            f"{level} CI",
            "clicks/impr.",
            "revenue/req",
            "latency p95 ms",
            "fallback",
            "errors",
            "empty",
        ],
        rows,
    )
    out += ["", f"## Treatments vs `{result.control}`", ""]
    rows = [
        [
            c.variant,
            _diff(m, c.diff),
            f"[{_diff(m, c.diff_low)}, {_diff(m, c.diff_high)}]",
            _opt(c.lift, "+.2%"),
            f"{c.p_value:.3g}",
            f"{c.p_adjusted:.3g}",
            _opt(c.achieved_power, ".2f"),
            _opt(c.required_per_arm, "d"),
            c.decision.value,
        ]
        for c in result.comparisons
    ]
    out += _table(
        [
            "variant",
            "diff",
            f"{level} CI of diff",
            "lift",
            "p",
            "adjusted p",
            "power at MDE",
            "required/arm",
            "decision",
        ],
        rows,
    )
    out += ["", "## Guardrails", ""]
    rows = [
        [
            c.variant,
            g.name,
            f"{g.control:.4g}",
            f"{g.treatment:.4g}",
            f"{g.limit:.4g}",
            "BREACHED" if g.breached else "ok",
        ]
        for c in result.comparisons
        for g in c.guardrails
    ]
    out += _table(["variant", "guardrail", "control", "treatment", "limit", "status"], rows)
    srm = result.srm
    shares = ", ".join(f"{k}={v:.3f}" for k, v in srm.expected_shares.items())
    counts = ", ".join(f"{k}={v}" for k, v in srm.observed.items())
    if result.prob_best:
        best = ", ".join(f"{k}={v:.3f}" for k, v in result.prob_best.items())
        out += [
            "",
            "## Bandit allocation",
            "",
            "- not a fixed-split test: p-values above are not valid; decision at most hold",
            f"- posterior P(best {m}) per arm: {best}",
        ]
    srm_line = (
        f"- sample ratio ({srm.unit}): {counts}; SRM check skipped: {srm.skipped}"
        if srm.skipped
        else f"- sample ratio ({srm.unit}): {counts}; expected {shares}; chi-square "
        f"{srm.statistic:.2f}, p={srm.p_value:.3g} → "
        f"{'**SRM DETECTED**' if srm.detected else 'ok'} (alpha {srm.alpha})"
    )
    out += [
        "",
        "## Trust checks",
        "",
        srm_line,
        f"- outcome join rate: {_opt(result.join_rate, '.2%')}",
        f"- invalid log lines: {result.invalid_lines}/{result.total_lines}",
    ]
    out += [f"- note: {n}" for n in result.notes]
    if chart:
        out += ["", f"![{m} per variant]({chart})"]
    return "\n".join(out) + "\n"


def plot_metric(result: AbResult, path: Path) -> Path:
    """Bar chart of the metric per variant with interval error bars, and diffs vs control."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = [v.name for v in result.variants]
    values = [v.value for v in result.variants]
    err = [
        [v.value - v.ci_low for v in result.variants],
        [v.ci_high - v.value for v in result.variants],
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        colours = ["#7f7f7f"] + ["#1f77b4"] * (len(names) - 1)
        left.bar(names, values, yerr=err, capsize=6, color=colours)
        left.set_title(f"{result.metric} per variant ({1 - result.config['alpha']:.0%} CI)")
        left.set_ylabel(str(result.metric))
        cmp = result.comparisons
        xs = list(range(len(cmp)))
        diffs = [c.diff for c in cmp]
        derr = [[c.diff - c.diff_low for c in cmp], [c.diff_high - c.diff for c in cmp]]
        right.errorbar(xs, diffs, yerr=derr, fmt="o", capsize=6)
        right.axhline(0.0, color="black", linewidth=0.8)
        right.set_xticks(xs, [f"{c.variant}\n{c.decision}" for c in cmp])
        right.set_xlim(-0.5, len(cmp) - 0.5)
        right.set_title(f"difference vs {result.control}")
        fig.suptitle(f"decision: {result.decision.upper()}")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def write_report(result: AbResult, out_dir: Path | str) -> dict[str, Path]:
    """Write report.md, report.json and report.png into ``out_dir`` (created if missing)."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "md": directory / REPORT_MD,
        "json": directory / REPORT_JSON,
        "png": directory / REPORT_PNG,
    }
    plot_metric(result, paths["png"])
    paths["md"].write_text(render_markdown(result, chart=REPORT_PNG), encoding="utf-8")
    paths["json"].write_text(to_json(result.to_dict()) + "\n", encoding="utf-8")
    return paths


def render_validation(report: ValidationReport, max_errors: int = 20) -> str:
    """Plain-text table of the validation checks, the invalid lines and the verdict."""
    exp, out = report.exposure_file, report.outcome_file
    join = report.join

    def status(failed: bool, warn: bool = False) -> str:
        return "FAIL" if failed else ("warn" if warn else "ok")

    invalid_fail = not report.allow_invalid
    rate = join.join_rate
    rows = [
        (
            "exposure lines (valid/total)",
            f"{exp.valid}/{exp.lines}",
            status(bool(exp.invalid) and invalid_fail, bool(exp.invalid)),
        ),
        (
            "outcome lines (valid/total)",
            f"{out.valid}/{out.lines}",
            status(bool(out.invalid) and invalid_fail, bool(out.invalid)),
        ),
        (
            "duplicate request_ids, conflicting",
            str(report.conflicting_duplicates),
            status(report.conflicting_duplicates > 0),
        ),
        (
            "duplicate request_ids, identical",
            str(report.exact_duplicates),
            status(False, report.exact_duplicates > 0),
        ),
        (
            "exposures out of time order",
            f"{report.exposure_order.out_of_order} (max {report.exposure_order.max_backwards_s:.3f}"
            " s back)",
            "info",
        ),
        (
            "outcomes out of time order",
            f"{report.outcome_order.out_of_order} (max {report.outcome_order.max_backwards_s:.3f}"
            " s back)",
            "info",
        ),
        (
            "join rate (floor)",
            f"{_opt(rate, '.2%')} ({join.joined}/{join.attributed}; floor {report.join_floor:.2%})",
            status(rate is not None and rate < report.join_floor, rate is None),
        ),
        ("outcomes without request_id", str(join.unattributed), "info"),
        ("outcomes with unknown request_id", str(join.unknown_request), "info"),
        ("outcomes on an item not shown", str(join.item_not_shown), "info"),
        (
            "joined outcomes before exposure",
            str(join.before_exposure),
            status(False, join.before_exposure > 0),
        ),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [
        f"exposures: {exp.path}",
        f"outcomes:  {out.path}",
        "",
        f"{'check':<{width}}  {'value':<{vwidth}}  status",
        f"{'-' * width}  {'-' * vwidth}  ------",
    ]
    lines += [f"{name:<{width}}  {value:<{vwidth}}  {st}" for name, value, st in rows]
    errors = [*exp.errors, *out.errors]
    if errors:
        lines += ["", "invalid lines:"]
        lines += [f"  {e}" for e in errors[:max_errors]]
        hidden = exp.invalid + out.invalid - min(len(errors), max_errors)
        if hidden > 0:
            lines.append(f"  … and {hidden} more")
    lines += ["", *(f"warning: {w}" for w in report.warnings)]
    verdict = "OK" if report.ok else "FAIL: " + "; ".join(report.failures)
    lines.append(f"result: {verdict}")
    return "\n".join(lines) + "\n"
