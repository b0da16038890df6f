"""Contracts of the operational controls: kill switches, answer flags, holdback, decision traces.

One place for what the server writes and the evaluation reads:

* **Exposure flags** (``exposure.v1`` ``context.extra``, written by the server): ``fallback_stage``
  (always: ``none`` / ``segment_popularity`` / ``global_popularity`` / ``last_known`` /
  ``kill_switch``), ``degraded`` = ``"1"`` when request state could not be read, ``error`` =
  an :class:`AnswerError` value when the answer failed or was degraded by a failure, ``empty``
  = ``"1"`` when no item was served (then ``items`` is empty), ``session_id`` when the unit was
  a session. ``eval ab`` counts a request as an error when :data:`ERROR_KEYS` hold a value and
  as empty when :data:`EMPTY_KEYS` do.
* **Holdback**: users in the holdback get the baseline and the variant :data:`HOLDBACK_VARIANT`.
* **Kill switch** (``P:ks`` hash, field :func:`scope_field`): :class:`KillSwitch` JSON.
* **Decision trace** (``P:tr:r:{request_id}``): :class:`DecisionTrace` JSON, with a TTL.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.events import MAX_STR_LEN, Id

KILL_SWITCH_STAGE = "kill_switch"
HOLDBACK_VARIANT = "holdback"
#: ``algo_version`` of baseline answers (kill switch, holdback).
BASELINE_ALGO = "baseline"

EXTRA_FALLBACK_STAGE = "fallback_stage"
EXTRA_DEGRADED = "degraded"
EXTRA_ERROR = "error"
EXTRA_EMPTY = "empty"
EXTRA_SESSION_ID = "session_id"
#: issue 20: the experiment's allocation mode ("fixed" / "bandit", ExperimentConfig.allocation);
#: written only for bandit-allocated experiments (absent = fixed split)
EXTRA_ALLOCATION = "allocation"
#: ``context.extra`` keys the server writes on exposures; clients may not send them.
SERVER_EXTRA_KEYS = frozenset(
    {
        EXTRA_FALLBACK_STAGE,
        EXTRA_DEGRADED,
        EXTRA_ERROR,
        EXTRA_EMPTY,
        EXTRA_SESSION_ID,
        EXTRA_ALLOCATION,
    }
)
FLAG_SET = "1"
#: What ``eval ab`` reads for its error-rate and empty-answer guardrails.
ERROR_KEYS: tuple[str, ...] = (EXTRA_ERROR,)
EMPTY_KEYS: tuple[str, ...] = (EXTRA_EMPTY,)
MAX_REASON_LEN = 200

Text = Annotated[str, StringConstraints(max_length=MAX_STR_LEN)]


class AnswerError(StrEnum):
    """Value of ``extra["error"]``: why an answer failed or was degraded."""

    STATE_UNAVAILABLE = "state_unavailable"
    """Request state could not be read (Redis error, timeout, deadline): cached answer."""
    NO_STATE = "no_state"
    """No item was ever known: the call was answered UNAVAILABLE with no items."""
    INTERNAL = "internal"
    """An unexpected server error: the call was answered INTERNAL with no items."""


class _Contract(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def scope_field(tenant: str, surface: str) -> str:
    """The kill-switch hash field of a scope; JSON, so no two scopes share a field."""
    return orjson.dumps([tenant, surface]).decode()


class KillSwitch(_Contract):
    """One kill switch that is on: answers in its scope come from the safe baseline."""

    tenant: Text = Field("", description="Tenant covered; empty = every tenant.")
    surface: Text = Field("", description="Surface covered; empty = every surface.")
    reason: Text = Field(min_length=1, description="Why it was switched on.")
    who: Text = Field(description="Principal that switched it on.")
    since: float = Field(description="Epoch seconds it was switched on.")

    @property
    def field(self) -> str:
        return scope_field(self.tenant, self.surface)

    def covers(self, tenant: str, surface: str) -> bool:
        return (not self.tenant or self.tenant == tenant) and (
            not self.surface or self.surface == surface
        )


def parse_kill_switches(raw: Mapping[Any, Any]) -> list[KillSwitch]:
    """The readable kill switches of a ``P:ks`` HGETALL reply (unreadable ones are skipped)."""
    out: list[KillSwitch] = []
    for value in raw.values():
        try:
            out.append(KillSwitch.model_validate_json(value))
        except ValueError:
            continue
    return sorted(out, key=lambda k: (k.tenant, k.surface))


class TracedItem(_Contract):
    """One served item of a trace."""

    item_id: Id
    rank: int = Field(ge=1)
    score: float
    reasons: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list, description="Pin / boost rules that hit it.")


class DecisionTrace(_Contract):
    """What one answer served, to whom (pseudonymous id) and why."""

    request_id: Id
    user_id: Id = Field(description="User (or session) id as the request gave it.")
    ts: float
    method: Text
    variant: Text
    algo_version: Text
    stage: Text
    tenant: Text
    surface: Text
    locale: Text
    items: list[TracedItem]
    rules: list[str] = Field(default_factory=list, description="Rules active for the request.")
    flags: list[str] = Field(default_factory=list, description="error / empty / degraded.")
