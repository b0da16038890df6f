"""Admin contracts: roles and principals, versioned serving config, experiment lifecycle.

Value formats of the admin-owned Redis keys (see :mod:`schemas.keyspace`):

* ``P:auth:pr`` hash — principal name → :class:`PrincipalRecord` JSON (revoked ones stay,
  with ``revoked_at``); ``P:auth:tok`` hash — SHA-256 hex of a token → principal name.
* ``P:cfgv`` hash — version number → :class:`ConfigVersion` JSON; ``P:cfgv:seq`` its counter.
* ``P:cfg`` string — :class:`RuntimeConfig` overrides JSON (the live ``config`` document).
* ``P:exps`` string — the live ``experiments`` document: name → :class:`ExperimentRecord`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.rules import ExperimentConfig

PrincipalName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
#: the principal of ``STREAMREC_ADMIN_TOKEN`` (never stored; cannot be added or revoked)
BOOTSTRAP_PRINCIPAL = "bootstrap-admin"


class Role(IntEnum):
    """Admin roles, ordered: a higher role may do everything a lower one may."""

    VIEWER = 1  # reads admin state
    OPERATOR = 2  # + kill switch, pausing experiments
    ADMIN = 3  # + rules, experiments, config, principals

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``viewer`` / ``operator`` / ``admin`` (any case); ValueError naming the choices."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(r.label for r in cls)
            raise ValueError(f"unknown role {text!r} (one of {choices})") from None


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrincipalRecord(_Contract):
    """A named holder of an admin token, as stored (the token itself never is)."""

    name: PrincipalName
    role: Literal["viewer", "operator", "admin"]
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token.")
    created_by: str
    created_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


ConfigKind = Literal["rules", "experiments", "config"]
CONFIG_KINDS: tuple[ConfigKind, ...] = ("rules", "experiments", "config")


class Snapshot(_Contract):
    """The three versioned documents as they were after one version."""

    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Rule id → rule (schemas.rules.Rule as JSON object)."
    )
    experiments: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Experiment name → ExperimentRecord (JSON object)."
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Run-time settings overrides: setting name → value."
    )


class Change(_Contract):
    """One difference between two snapshots: a JSON path and its old / new value (JSON)."""

    path: str
    old: str | None
    new: str | None


class ConfigVersion(_Contract):
    """One version of the serving configuration: who changed what, when, why."""

    version: int = Field(ge=1)
    ts: float
    author: str
    reason: str
    action: str = Field(description="What made it: create_rule, set_config, rollback …")
    kinds: list[ConfigKind] = Field(description="Documents this version changed.")
    target: str = Field("", description="Rule id, experiment name or version rolled back to.")
    diff: list[Change] = Field(default_factory=list, description="Against the version before.")
    state: Snapshot


ExperimentStatus = Literal["draft", "running", "paused", "stopped", "promoted"]
#: allowed lifecycle moves: status → statuses it may go to
EXPERIMENT_MOVES: dict[str, tuple[str, ...]] = {
    "draft": ("running", "stopped"),
    "running": ("paused", "stopped", "promoted"),
    "paused": ("running", "stopped", "promoted"),
    "stopped": (),
    "promoted": (),
}


class ExperimentRecord(_Contract):
    """One experiment and where it is in its lifecycle."""

    config: ExperimentConfig
    status: ExperimentStatus = "draft"
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = Field(None, description="When it first ran (its logs start).")
    promoted_variant: str | None = None
    decision: str = Field("", description="The eval ab summary (or forced reason) of a promote.")

    @property
    def control(self) -> str:
        """The control arm: the variant named ``control``, else the first one."""
        names = [v.name for v in self.config.variants]
        return "control" if "control" in names else names[0]
