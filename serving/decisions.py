"""Why an answer looks the way it does: rule hits per item and the answer's flags (pure).

Built off the request path (the exposure sender and the trace writer call these) from what
the request path handed over in a :class:`~serving.exposure_log.PendingExposure`.

* :func:`rule_hits`: for each served item the ids of the active pin / boost rules that target
  it (by id or category); and the ids of every rule active for the request (blocks included:
  they touch the items that are *not* shown).
* :func:`answer_flags`: the ``context.extra`` flags of the ``schemas.controls`` contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas.controls import (
    EXTRA_DEGRADED,
    EXTRA_EMPTY,
    EXTRA_ERROR,
    FLAG_SET,
    AnswerError,
)
from schemas.rules import Rule


def rule_hits(
    items: Sequence[str],
    rules: Sequence[Rule],
    categories: Mapping[str, tuple[str, ...]],
    *,
    now: float,
    tenant: str,
    surface: str,
) -> tuple[list[list[str]], list[str]]:
    """``(per item: ids of the pin / boost rules hitting it, ids of all active rules)``."""
    active = [r for r in rules if r.applies(now=now, tenant=tenant, surface=surface)]
    shaping = [r for r in active if r.kind in ("pin", "boost")]
    per_item = [
        [r.id for r in shaping if r.matches(item, categories.get(item, ()))] for item in items
    ]
    return per_item, [r.id for r in active]


def answer_flags(*, items: int, degraded: bool, error: str) -> dict[str, str]:
    """``context.extra`` flags of one answer: ``degraded``, ``error``, ``empty``.

    A degraded answer (request state unreadable) is an error of kind ``state_unavailable``
    unless a graver error is given.
    """
    flags: dict[str, str] = {}
    if degraded:
        flags[EXTRA_DEGRADED] = FLAG_SET
    if error:
        flags[EXTRA_ERROR] = error
    elif degraded:
        flags[EXTRA_ERROR] = AnswerError.STATE_UNAVAILABLE.value
    if items == 0:
        flags[EXTRA_EMPTY] = FLAG_SET
    return flags
