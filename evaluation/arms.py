"""Per-variant request data for experiment analysis: the exposure ↔ outcome join, per request.

The unit of analysis is the *request* (one exposure). A duplicated ``request_id`` counts once
(its first exposure). Only outcomes that join (known ``request_id`` and the item was in that
exposure, see :mod:`evaluation.logs`) are credited to a request:

- ``clicked``: the request has at least one joined ``click``;
- ``purchased``: the request has at least one joined ``purchase``;
- ``revenue``: the sum of ``value`` over its joined purchases (a missing value counts 0);
- ``clicked_items``: distinct items of the request with a joined click (for clicks/impressions).

Guardrail flags come from ``context.extra`` of the exposure, as the server writes them (the
contract is :mod:`schemas.controls`): the request was served by a fallback when
``extra["fallback"]`` or ``extra["fallback_stage"]`` holds a value, failed or was degraded by
a failure when ``extra["error"]`` does (``ERROR_KEYS``), and served nothing when
``extra["empty"]`` does (``EMPTY_KEYS``; such exposures have no items). Values ``""``, ``0``,
``false``, ``no`` and ``none`` (any case) mean "not set".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from evaluation.logs import ExposureIndex, JoinStatus, Logs, gc_paused
from evaluation.stats import FloatArray
from schemas.controls import EMPTY_KEYS, ERROR_KEYS, EXTRA_FALLBACK_STAGE
from schemas.events import EventType

FALLBACK_KEYS = ("fallback", EXTRA_FALLBACK_STAGE)
__all__ = ["EMPTY_KEYS", "ERROR_KEYS", "FALLBACK_KEYS", "ArmData", "collect_arms", "flag_set"]
_UNSET = frozenset({"", "0", "false", "no", "none"})


def flag_set(extra: Mapping[str, str], keys: tuple[str, ...]) -> bool:
    """True when any of ``keys`` holds a value other than an "unset" word."""
    return any(extra.get(key, "").strip().lower() not in _UNSET for key in keys)


@dataclass
class ArmData:
    """One variant's requests as columns (one entry per request, in exposure order)."""

    name: str
    users: set[str] = field(default_factory=set)
    clicked: list[bool] = field(default_factory=list)
    purchased: list[bool] = field(default_factory=list)
    revenue: list[float] = field(default_factory=list)
    impressions: int = 0
    clicked_items: int = 0
    latencies: list[float] = field(default_factory=list)
    fallbacks: int = 0
    errors: int = 0
    empties: int = 0

    @property
    def requests(self) -> int:
        return len(self.clicked)

    @property
    def click_requests(self) -> int:
        return sum(self.clicked)

    @property
    def purchase_requests(self) -> int:
        return sum(self.purchased)

    def revenue_array(self) -> FloatArray:
        return np.asarray(self.revenue, dtype=np.float64)

    def latency_p95(self) -> float | None:
        if not self.latencies:
            return None
        return float(np.percentile(np.asarray(self.latencies, dtype=np.float64), 95))


@dataclass(frozen=True)
class ArmsSummary:
    """All arms plus the join facts the analysis needs."""

    arms: dict[str, ArmData]
    join_rate: float | None
    multi_variant_users: int
    total_users: int


@dataclass
class _RequestAcc:
    clicked: set[str] = field(default_factory=set)
    purchased: bool = False
    revenue: float = 0.0


def collect_arms(logs: Logs) -> ArmsSummary:
    """Join outcomes to exposures and build one :class:`ArmData` per variant."""
    with gc_paused():
        return _collect(logs)


def _collect(logs: Logs) -> ArmsSummary:
    index = ExposureIndex.build(logs.exposures)
    acc: dict[str, _RequestAcc] = {}
    joined = attributed = 0
    for outcome in logs.outcomes:
        status = index.status(outcome)
        if status is JoinStatus.UNATTRIBUTED:
            continue
        attributed += 1
        if status is not JoinStatus.JOINED or outcome.request_id is None:
            continue
        joined += 1
        req = acc.setdefault(outcome.request_id, _RequestAcc())
        if outcome.event_type is EventType.CLICK:
            req.clicked.add(outcome.item_id)
        elif outcome.event_type is EventType.PURCHASE:
            req.purchased = True
            req.revenue += outcome.value or 0.0
    arms: dict[str, ArmData] = {}
    user_variants: dict[str, set[str]] = {}
    empty = _RequestAcc()
    for request_id, exp in index.by_request.items():
        arm = arms.get(exp.variant)
        if arm is None:
            arm = arms[exp.variant] = ArmData(exp.variant)
        req = acc.get(request_id, empty)
        arm.users.add(exp.user_id)
        user_variants.setdefault(exp.user_id, set()).add(exp.variant)
        arm.clicked.append(bool(req.clicked))
        arm.purchased.append(req.purchased)
        arm.revenue.append(req.revenue)
        arm.impressions += len(exp.items)
        arm.clicked_items += len(req.clicked)
        if exp.latency_ms is not None:
            arm.latencies.append(exp.latency_ms)
        arm.fallbacks += flag_set(exp.context.extra, FALLBACK_KEYS)
        arm.errors += flag_set(exp.context.extra, ERROR_KEYS)
        arm.empties += flag_set(exp.context.extra, EMPTY_KEYS)
    multi = sum(1 for variants in user_variants.values() if len(variants) > 1)
    return ArmsSummary(
        arms=arms,
        join_rate=joined / attributed if attributed else None,
        multi_variant_users=multi,
        total_users=len(user_variants),
    )
