"""Offline evaluation: event-log validation and A/B experiment analysis with a decision.

``validate_logs`` checks exported exposure/outcome logs; ``analyze`` turns them into per-variant
metrics, tests and a ship / hold / rollback :class:`Decision`; :mod:`evaluation.report` renders
the result; :mod:`evaluation.stats` holds the statistics; :mod:`evaluation.synth` generates
known-answer logs for tests and demos; :func:`run_prequential` replays a log test-then-learn
through the real worker and server code (:mod:`evaluation.prequential`, HR/MRR/NDCG in
:mod:`evaluation.metrics`).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evaluation.ab import analyze
    from evaluation.ab_model import AbConfig, AbResult, Correction, Decision, Metric, parse_split
    from evaluation.baselines import PopularityBaseline
    from evaluation.logs import Logs, ValidationReport, read_logs, validate_logs
    from evaluation.metrics import Accumulator, Scores
    from evaluation.prequential import PrequentialResult, run_prequential
    from evaluation.protocol import PrequentialSpec, Protocol
    from evaluation.report import render_markdown, render_validation, write_report
    from evaluation.synth_ratings import RatingsSpec, write_udata

# Imported lazily (PEP 562): the statistics stack (statsmodels, scipy) costs ~1 s to import,
# and every `streamrec` command would pay it at start-up otherwise.
_LAZY = {
    "analyze": "evaluation.ab",
    "AbConfig": "evaluation.ab_model",
    "AbResult": "evaluation.ab_model",
    "Correction": "evaluation.ab_model",
    "Decision": "evaluation.ab_model",
    "Metric": "evaluation.ab_model",
    "parse_split": "evaluation.ab_model",
    "Logs": "evaluation.logs",
    "ValidationReport": "evaluation.logs",
    "read_logs": "evaluation.logs",
    "validate_logs": "evaluation.logs",
    "render_markdown": "evaluation.report",
    "render_validation": "evaluation.report",
    "write_report": "evaluation.report",
    "Accumulator": "evaluation.metrics",
    "PopularityBaseline": "evaluation.baselines",
    "PrequentialResult": "evaluation.prequential",
    "PrequentialSpec": "evaluation.protocol",
    "Protocol": "evaluation.protocol",
    "RatingsSpec": "evaluation.synth_ratings",
    "Scores": "evaluation.metrics",
    "run_prequential": "evaluation.prequential",
    "write_udata": "evaluation.synth_ratings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "AbConfig",
    "AbResult",
    "Accumulator",
    "Correction",
    "Decision",
    "Logs",
    "Metric",
    "PopularityBaseline",
    "PrequentialResult",
    "PrequentialSpec",
    "Protocol",
    "RatingsSpec",
    "Scores",
    "ValidationReport",
    "analyze",
    "parse_split",
    "read_logs",
    "render_markdown",
    "render_validation",
    "run_prequential",
    "validate_logs",
    "write_report",
    "write_udata",
]
