"""Serving configuration contracts: merchandising rules, experiment configs, audit entries.

These are the value formats of the serving-owned Redis keys (see :mod:`schemas.keyspace`):

* ``P:rules`` hash — rule id → :class:`Rule` JSON (``Rule.model_dump_json()``).
* ``P:exp`` string — :class:`ExperimentConfig` JSON (also the ``experiments_file`` format).
* ``P:audit`` stream — one entry per admin change with the fields of :class:`AuditEntry`
  (``ts`` epoch seconds, ``who``, ``action``, ``target``, ``detail`` JSON); ``MAXLEN ~ 10000``.

Rules:

* ``pin`` — put ``item_id`` at 1-based ``position`` (block, unavailable and the request's
  exclude list win over a pin; the user's seen filter does not).
* ``boost`` — multiply the score of ``item_id``, or of every item in ``category``, by ``factor``.
* ``block`` — never return ``item_id``, or any item in ``category``.

Scope: ``tenant`` / ``surface`` (empty = all). Validity: ``valid_from`` ≤ now < ``valid_until``
(RFC 3339 or epoch seconds; absent = unbounded).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.events import MAX_STR_LEN, Id, Timestamp

RuleKind = Literal["pin", "boost", "block"]
RULE_KINDS: tuple[RuleKind, ...] = ("pin", "boost", "block")
MAX_PIN_POSITION = 100
MAX_BOOST_FACTOR = 1000.0
MAX_VARIANTS = 20
SHARE_TOLERANCE = 1e-6

ScopeStr = Annotated[str, StringConstraints(max_length=MAX_STR_LEN)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
ParamValue = bool | int | float | str


class _Contract(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Rule(_Contract):
    """One merchandising rule (pin, boost or block), scoped and time-bounded."""

    id: Id = Field(description="Rule id (assigned by the server when created without one).")
    kind: RuleKind = Field(description="pin, boost or block.")
    item_id: Id | None = Field(None, description="Target item (required for pin).")
    category: Id | None = Field(None, description="Target category (boost and block only).")
    position: int | None = Field(
        None, ge=1, le=MAX_PIN_POSITION, description="1-based position of a pinned item."
    )
    factor: float | None = Field(
        None, gt=0, le=MAX_BOOST_FACTOR, description="Score multiplier of a boost."
    )
    tenant: ScopeStr = Field("", description="Tenant the rule applies to; empty = all.")
    surface: ScopeStr = Field("", description="Surface the rule applies to; empty = all.")
    valid_from: Timestamp | None = Field(None, description="Start of validity; absent = now.")
    valid_until: Timestamp | None = Field(None, description="End of validity; absent = never.")
    created_by: ScopeStr = Field("", description="Who created it (from the admin call).")
    created_at: Timestamp | None = Field(None, description="When it was created.")
    note: ScopeStr = Field("", description="Free text for humans.")

    @model_validator(mode="after")
    def _shape(self) -> Self:
        has_item, has_cat = self.item_id is not None, self.category is not None
        if self.kind == "pin":
            if not has_item or has_cat:
                raise ValueError("a pin rule needs item_id and no category")
            if self.position is None:
                raise ValueError("a pin rule needs position (1-based)")
            if self.factor is not None:
                raise ValueError("a pin rule takes no factor")
        else:
            if has_item == has_cat:
                raise ValueError(f"a {self.kind} rule needs exactly one of item_id or category")
            if self.position is not None:
                raise ValueError(f"a {self.kind} rule takes no position")
        if self.kind == "boost":
            if self.factor is None or not math.isfinite(self.factor):
                raise ValueError("a boost rule needs a finite factor > 0")
        elif self.kind == "block" and self.factor is not None:
            raise ValueError("a block rule takes no factor")
        if (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_until <= self.valid_from
        ):
            raise ValueError("valid_until must be after valid_from")
        return self

    def active_at(self, now: float) -> bool:
        """True when ``now`` (epoch seconds) is inside the validity window."""
        if self.valid_from is not None and now < self.valid_from.timestamp():
            return False
        return self.valid_until is None or now < self.valid_until.timestamp()

    def expired_at(self, now: float) -> bool:
        return self.valid_until is not None and now >= self.valid_until.timestamp()

    def in_scope(self, tenant: str, surface: str) -> bool:
        """True when the rule's scope covers (tenant, surface)."""
        return (not self.tenant or self.tenant == tenant) and (
            not self.surface or self.surface == surface
        )

    def applies(self, *, now: float, tenant: str, surface: str) -> bool:
        return self.active_at(now) and self.in_scope(tenant, surface)

    def matches(self, item_id: str, categories: tuple[str, ...] = ()) -> bool:
        """True when the rule targets this item (directly or through one of its categories)."""
        if self.item_id is not None:
            return item_id == self.item_id
        return self.category is not None and self.category in categories


#: how an experiment allocates units to its variants (issue 20)
Allocation = Literal["fixed", "bandit"]


class Variant(_Contract):
    """One experiment arm: a share of the traffic and ranker parameter overrides."""

    name: Name = Field(description="Variant name, reported in responses and exposure events.")
    share: float = Field(ge=0.0, le=1.0, description="Share of units bucketed into it.")
    params: dict[Name, ParamValue] = Field(
        default_factory=dict,
        description="Ranker parameter overrides (fields of serving.config.RankerConfig).",
    )
    algo_version: ScopeStr | None = Field(
        None, description="Overrides the server's algo_version for this variant."
    )


class ExperimentConfig(_Contract):
    """Variants with shares summing to 1; units are bucketed by sha256(salt + ':' + unit)."""

    name: Name = Field("default", description="Experiment name.")
    salt: ScopeStr = Field("", description="Bucketing salt; empty = the experiment name.")
    variants: list[Variant] = Field(min_length=1, max_length=MAX_VARIANTS)
    # issue 20: bandit allocation of variants (serving/bandit.py, docs/controls.md)
    allocation: Allocation = Field(
        "fixed",
        description="fixed: units hashed into the variants' shares; bandit: Thompson sampling "
        "over the variants' CTR (the shares are the start allocation), sticky per unit.",
    )
    min_share: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="Bandit allocation: the least share of new units each variant keeps.",
    )

    @model_validator(mode="after")
    def _shares(self) -> Self:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        total = math.fsum(v.share for v in self.variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"variant shares must sum to 1, got {total:g}")
        if self.allocation == "bandit":
            if len(self.variants) < 2:
                raise ValueError("bandit allocation needs at least two variants")
            if self.min_share * len(self.variants) > 1.0 + SHARE_TOLERANCE:
                raise ValueError(
                    f"min_share {self.min_share:g} x {len(self.variants)} variants exceeds 1"
                )
        return self

    @property
    def bucket_salt(self) -> str:
        return self.salt or self.name


DEFAULT_EXPERIMENT = ExperimentConfig(name="default", variants=[Variant(name="control", share=1.0)])

AuditAction = Literal[
    "create_rule",
    "delete_rule",
    "set_experiment",
    # issue 19: principals, versioned config, experiment lifecycle
    "add_principal",
    "revoke_principal",
    "set_config",
    "rollback",
    "create_experiment",
    "start_experiment",
    "pause_experiment",
    "resume_experiment",
    "stop_experiment",
    "promote_experiment",
    # issue 19: operational controls (kill switch, erasure): serving/admin_controls.py
    "kill_switch_on",
    "kill_switch_off",
    "forget_user",
]


class AuditEntry(_Contract):
    """One admin change, as stored in the ``P:audit`` stream."""

    id: str = Field("", description="Stream entry id (set when read back).")
    ts: float = Field(description="Epoch seconds of the change.")
    who: ScopeStr
    action: AuditAction
    target: ScopeStr = Field(description="Rule id or experiment name.")
    detail: str = Field(description="JSON of the rule or experiment concerned.")
    version: int = Field(0, description="Config version the change made (0 = not versioned).")
    reason: str = Field("", description="Why, as given by the caller.")

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.ts, tz=UTC)
