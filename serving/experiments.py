"""Experiment assignment: deterministic hash bucketing of users (or sessions) into variants.

``u = int(sha256(salt + ":" + unit)[:8]) / 2**64`` ∈ [0, 1); the variant is the first whose
cumulative share exceeds ``u``. The unit is the user_id, or the session_id when there is no
user. Same config + same unit → same variant on every server, in every run.
Config sources, first present wins: Redis ``P:exp`` (Admin SetExperiment), the
``experiments_file`` setting, the built-in single ``control`` variant.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from core.errors import ConfigError
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

    def assign(self, unit: str) -> Assignment:
        """The variant of ``unit`` (a user_id or session_id)."""
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
