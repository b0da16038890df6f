"""Experiment assignment: deterministic hash bucketing of users (or sessions) into variants.

``u = int(sha256(salt + ":" + unit)[:8]) / 2**64`` ∈ [0, 1); the variant is the first whose
cumulative share exceeds ``u``. The unit is the user_id, or the session_id when there is no
user. Same config + same unit → same variant on every server, in every run.
Config sources, first present wins: Redis ``P:exp`` (the effective experiment of the Admin
lifecycle, see :func:`serving.config_versions.effective_experiment`), the
``experiments_file`` setting, the built-in single ``control`` variant.

Lifecycle (Admin): an experiment is created as a draft, started (running), paused (everyone
gets the control arm, within two refreshes), resumed, and finally stopped (the server's
default again) or promoted (everyone gets one arm). Promotion needs ``eval ab`` on the
experiment's own logs to say *ship* with at least 30 users per arm, or a forced reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from core.errors import ConfigError
from schemas.admin import EXPERIMENT_MOVES, ExperimentRecord, ExperimentStatus, Snapshot
from schemas.rules import DEFAULT_EXPERIMENT, ExperimentConfig
from serving.config import RankerConfig

ExperimentSource = Literal["redis", "file", "default"]
_SCALE = float(2**64)


def bucket(salt: str, unit: str) -> float:
    """Deterministic position of ``unit`` in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}:{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def parse_experiment(raw: str | bytes) -> ExperimentConfig:
    """Parse experiment JSON; raise ``ValueError`` with a one-line reason."""
    try:
        return ExperimentConfig.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"bad experiment config at {where}: {message}") from exc


def load_experiment_file(path: Path) -> ExperimentConfig:
    """Read an experiment config file; a missing or bad file is a :class:`ConfigError`."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read experiments file {path}: {exc.strerror}") from exc
    try:
        return parse_experiment(raw)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Assignment:
    variant: str
    config: RankerConfig
    algo_version: str


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    """A validated experiment config with the ranker config of each variant resolved."""

    experiment: ExperimentConfig
    source: ExperimentSource
    assignments: tuple[tuple[float, Assignment], ...]  # (cumulative share, assignment)

    @classmethod
    def build(
        cls,
        experiment: ExperimentConfig,
        *,
        base: RankerConfig,
        algo_version: str,
        source: ExperimentSource,
    ) -> ExperimentPlan:
        """Resolve every variant's overrides against ``base``; bad overrides raise ValueError."""
        cumulative = 0.0
        table: list[tuple[float, Assignment]] = []
        for variant in experiment.variants:
            try:
                config = base.with_overrides(variant.params)
            except ValueError as exc:
                raise ValueError(f"variant {variant.name!r}: {exc}") from exc
            cumulative += variant.share
            if variant.share > 0:
                version = variant.algo_version or algo_version
                table.append((cumulative, Assignment(variant.name, config, version)))
        return cls(experiment, source, tuple(table))

    @classmethod
    def default(cls, *, base: RankerConfig, algo_version: str) -> ExperimentPlan:
        return cls.build(DEFAULT_EXPERIMENT, base=base, algo_version=algo_version, source="default")

    @property
    def bandit(self) -> bool:
        """True when the variants are allocated by Thompson sampling (serving/bandit.py)."""
        return self.experiment.allocation == "bandit"

    @property
    def shares(self) -> dict[str, float]:
        """The current share of new units per variant."""
        shares, previous = {}, 0.0
        for cumulative, assignment in self.assignments:
            shares[assignment.variant] = cumulative - previous
            previous = cumulative
        return shares

    def with_shares(self, shares: dict[str, float]) -> ExperimentPlan:
        """The same variants under a new allocation (bandit recomputation); unknown names and
        variants missing from ``shares`` keep nothing."""
        by_name = {a.variant: a for _, a in self.assignments}
        cumulative, table = 0.0, []
        for variant in self.experiment.variants:
            share = shares.get(variant.name, 0.0)
            cumulative += share
            if share > 0 and variant.name in by_name:
                table.append((cumulative, by_name[variant.name]))
        if not table:
            return self
        return ExperimentPlan(self.experiment, self.source, tuple(table))

    def assignment_of(self, variant: str) -> Assignment | None:
        """The assignment of a variant that takes units, or None."""
        for _, assignment in self.assignments:
            if assignment.variant == variant:
                return assignment
        return None

    def assign(self, unit: str) -> Assignment:
        """The variant of ``unit`` (a user_id or session_id).

        Bandit allocation: the *first* arm of a new unit (hashed against the current shares);
        :meth:`serving.shared_state.SharedState.assign` makes it sticky.
        """
        position = bucket(self.experiment.bucket_salt, unit)
        for cumulative, assignment in self.assignments:
            if position < cumulative:
                return assignment
        return self.assignments[-1][1]  # float rounding at the very top of [0, 1)

    def variant_config(self, name: str) -> RankerConfig | None:
        for _, assignment in self.assignments:
            if assignment.variant == name:
                return assignment.config
        return None


# --- lifecycle (issue 19): draft → running → paused → stopped / promoted ----------------------
#: users each arm needs in the analysed logs before any promotion decision
MIN_USERS_PER_ARM = 30


class LifecycleError(Exception):
    """A lifecycle move the experiment's state does not allow (FAILED_PRECONDITION)."""


class UnknownExperiment(LookupError):
    """No experiment of that name (NOT_FOUND)."""


def _records(snapshot: Snapshot) -> dict[str, ExperimentRecord]:
    return {
        name: ExperimentRecord.model_validate_json(json.dumps(raw))
        for name, raw in snapshot.experiments.items()
    }


def _with(snapshot: Snapshot, record: ExperimentRecord) -> Snapshot:
    experiments = {**snapshot.experiments, record.config.name: record.model_dump(mode="json")}
    return snapshot.model_copy(update={"experiments": experiments})


def create_experiment(
    snapshot: Snapshot, config: ExperimentConfig, *, by: str, now: float
) -> Snapshot:
    """Add ``config`` as a draft; LifecycleError when the name is taken."""
    if config.name in snapshot.experiments:
        raise LifecycleError(f"experiment {config.name!r} exists (pick another name)")
    record = ExperimentRecord(
        config=config, status="draft", created_by=by, created_at=now, updated_at=now
    )
    return _with(snapshot, record)


def set_running(snapshot: Snapshot, config: ExperimentConfig, *, by: str, now: float) -> Snapshot:
    """SetExperiment: ``config`` runs now (created or replaced); any other live one stops."""
    records = _records(snapshot)
    for name, record in records.items():
        if name != config.name and record.status in ("running", "paused"):
            snapshot = _with(snapshot, record.model_copy(update={"status": "stopped"}))
    old = records.get(config.name)
    record = ExperimentRecord(
        config=config,
        status="running",
        created_by=old.created_by if old else by,
        created_at=old.created_at if old else now,
        updated_at=now,
        started_at=now,
    )
    return _with(snapshot, record)


def move_experiment(
    snapshot: Snapshot,
    name: str,
    to: ExperimentStatus,
    *,
    now: float,
    variant: str | None = None,
    decision: str = "",
) -> Snapshot:
    """``name`` moved to status ``to`` (see :data:`schemas.admin.EXPERIMENT_MOVES`).

    Only one experiment is live (running or paused) at a time; promote needs ``variant``,
    one of the experiment's arms.
    """
    records = _records(snapshot)
    record = records.get(name)
    if record is None:
        known = ", ".join(sorted(records)) or "none"
        raise UnknownExperiment(f"no experiment {name!r} (known: {known})")
    if to not in EXPERIMENT_MOVES[record.status]:
        allowed = ", ".join(EXPERIMENT_MOVES[record.status]) or "nothing (it is final)"
        raise LifecycleError(
            f"experiment {name!r} is {record.status}: it cannot become {to} (allowed: {allowed})"
        )
    if to == "running":
        live = [n for n, r in records.items() if n != name and r.status in ("running", "paused")]
        if live:
            raise LifecycleError(
                f"experiment {live[0]!r} is {records[live[0]].status}: stop it first "
                "(one live experiment at a time)"
            )
    update: dict[str, object] = {"status": to, "updated_at": now}
    if to == "running" and record.started_at is None:
        update["started_at"] = now
    if to == "promoted":
        names = [v.name for v in record.config.variants]
        if variant not in names:
            raise ValueError(f"variant {variant!r} is not an arm of {name!r} ({', '.join(names)})")
        update["promoted_variant"] = variant
        update["decision"] = decision
    return _with(snapshot, record.model_copy(update=update))


def experiment_record(snapshot: Snapshot, name: str) -> ExperimentRecord:
    record = _records(snapshot).get(name)
    if record is None:
        raise UnknownExperiment(f"no experiment {name!r}")
    return record


def promotion_refusal(
    record: ExperimentRecord, *, decision: str, users_per_arm: dict[str, int]
) -> str | None:
    """Why a promotion without ``--force`` is refused, or None when ``eval ab`` allows it.

    The analysis must say ``ship`` and every arm of the experiment must have at least
    :data:`MIN_USERS_PER_ARM` users in the analysed logs.
    """
    arms = [v.name for v in record.config.variants if v.share > 0]
    short = {arm: users_per_arm.get(arm, 0) for arm in arms}
    short = {arm: n for arm, n in short.items() if n < MIN_USERS_PER_ARM}
    if short:
        listed = ", ".join(f"{arm} {n}" for arm, n in sorted(short.items()))
        return f"too few users to decide: {listed} (at least {MIN_USERS_PER_ARM} per arm)"
    if decision != "ship":
        said = decision or "nothing"
        return f"eval ab says {said}, not ship (use --force with a reason to override)"
    return None
