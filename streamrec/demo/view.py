"""The live view of ``streamrec demo`` (a rich table refreshed while the load runs)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table

from streamrec.demo.load import Load
from streamrec.demo.summary import Summary, percentile

__all__ = ["render"]


def render(summary: Summary, load: Load | None, remaining_s: float) -> Group:
    figures = Table(title=f"streamrec demo - {summary.prefix}", show_header=False, expand=False)
    figures.add_column("what", style="bold")
    figures.add_column("value", justify="right")
    lat99 = percentile(summary.latencies_ms, 99)
    fresh = summary.freshness_s[-1] if summary.freshness_s else float("nan")
    figures.add_row(
        "events/s produced / processed",
        f"{summary.produced_rate:.0f} / {summary.processed_rate:.0f}",
    )
    figures.add_row(
        "lag (events not yet applied)", str(summary.lag if summary.lag is not None else "?")
    )
    figures.add_row("freshness (newest applied event age)", f"{fresh:.2f} s")
    figures.add_row("recommend latency p99", f"{lat99:.1f} ms")
    hits = summary.hits
    figures.add_row(
        "HR@10 streamrec / popularity", f"{hits.hr_streamrec:.3f} / {hits.hr_popularity:.3f}"
    )
    figures.add_row("requests / outcomes", f"{summary.requests} / {summary.produced}")
    figures.add_row("time left", f"{max(0.0, remaining_s):.0f} s")
    users = Table(title="three shoppers (favourite category in brackets)", expand=False)
    users.add_column("user")
    users.add_column("last viewed (newest first)")
    users.add_column("top 5 of their latest answer")
    if load is not None:
        shop = load.shop
        for view in load.views.values():
            fav = view.favourite
            recent = [f"{i}*" if shop.category_of.get(i) == fav else i for i in view.recent[:4]]
            answer = [f"{i}*" if shop.category_of.get(i) == fav else i for i in view.answer]
            users.add_row(
                f"{view.user_id} ({fav})", " ".join(recent) or "-", " ".join(answer) or "-"
            )
    note = "  * = item of the shopper's favourite category"
    return Group(figures, users, note)
