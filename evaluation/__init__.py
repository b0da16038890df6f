"""Offline evaluation: event-log validation and A/B experiment analysis with a decision.

``validate_logs`` checks exported exposure/outcome logs; ``analyze`` turns them into per-variant
metrics, tests and a ship / hold / rollback :class:`Decision`; :mod:`evaluation.report` renders
the result; :mod:`evaluation.stats` holds the statistics; :mod:`evaluation.synth` generates
known-answer logs for tests and demos.
"""

from evaluation.ab import analyze
from evaluation.ab_model import AbConfig, AbResult, Correction, Decision, Metric, parse_split
from evaluation.logs import Logs, ValidationReport, read_logs, validate_logs
from evaluation.report import render_markdown, render_validation, write_report

__all__ = [
    "AbConfig",
    "AbResult",
    "Correction",
    "Decision",
    "Logs",
    "Metric",
    "ValidationReport",
    "analyze",
    "parse_split",
    "read_logs",
    "render_markdown",
    "render_validation",
    "validate_logs",
    "write_report",
]
