"""``streamrec admin explain REQUEST_ID``: the decision trace of one answer.

What was served (items with their reasons and the rules that touched them), to whom (the
pseudonymous user or session id the request carried), variant, fallback stage, the rules
active for the request and the answer's flags (error / empty / degraded). Traces are kept for
``trace_retention_s`` (default 7 days); an unknown or older request id is an error. Viewer.
"""

from __future__ import annotations

from typing import Annotated

import typer

from schemas import recommender_pb2 as pb
from streamrec.commands.admin.client import call
from streamrec.commands.admin.render import AsJson, as_dict, echo_json

__all__ = ["explain", "render"]


def render(trace: pb.ExplainResponse) -> str:
    """A header with who / when / variant / stage, then one line per item."""
    flags = f"  flags {','.join(trace.flags)}" if trace.flags else ""
    rules = ",".join(trace.rules) or "-"
    lines = [
        f"request {trace.request_id}  {trace.method} at {trace.ts}",
        f"  user {trace.user_id}  tenant {trace.tenant}  surface {trace.surface}"
        + (f"  locale {trace.locale}" if trace.locale else ""),
        f"  variant {trace.variant}  algo {trace.algo_version}  stage {trace.stage}{flags}",
        f"  rules active: {rules}",
    ]
    for item in trace.items:
        hit = f"  [rules {','.join(item.rules)}]" if item.rules else ""
        why = "; ".join(item.reasons) or "-"
        lines.append(f"  {item.rank:>3}. {item.item_id}  {item.score:.4g}  {why}{hit}")
    if not trace.items:
        lines.append("  (no items were served)")
    return "\n".join(lines)


def explain(
    request_id: Annotated[str, typer.Argument(metavar="REQUEST_ID", help="From the answer.")],
    as_json: Annotated[bool, AsJson] = False,
) -> None:
    """What one answer served, to whom, and why."""
    trace = call("Explain", pb.ExplainRequest(request_id=request_id))
    if as_json:
        echo_json(as_dict(trace))
        return
    typer.echo(render(trace))
