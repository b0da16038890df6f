"""Versioned serving config: snapshots of rules, experiments and run-time settings, diffs.

Three documents are versioned together (:class:`schemas.admin.Snapshot`): ``rules`` (rule id →
rule), ``experiments`` (name → lifecycle record) and ``config`` (run-time settings overrides).
Every change is a new :class:`~schemas.admin.ConfigVersion` holding the whole snapshot after
it, so ``rollback V`` restores exactly what version V served, as a new version.

Run-time settings: the ``ranker_*`` settings (:data:`RUNTIME_SETTINGS`) may change while the
servers run; a value is validated exactly as its ``STREAMREC_*`` variable is (same bounds).
Processor (worker) settings are not on the list: the worker reads them once at start, and
changing co-visitation weights mid-stream would mix two scales in the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core.settings import Settings, setting_field
from schemas.admin import CONFIG_KINDS, Change, ConfigKind, ExperimentRecord, Snapshot
from schemas.rules import ExperimentConfig, Variant
from serving.config import RankerConfig

__all__ = [
    "RUNTIME_SETTINGS",
    "RuntimeOverrides",
    "apply_overrides",
    "diff",
    "effective_experiment",
    "parse_kind",
    "restore",
    "validate_overrides",
]

RANKER_PREFIX = "ranker_"
#: settings that may change at run time: each ranker_<field> of RankerConfig
RUNTIME_SETTINGS: tuple[str, ...] = tuple(
    sorted(
        f"{RANKER_PREFIX}{name}"
        for name in RankerConfig.model_fields
        if f"{RANKER_PREFIX}{name}" in Settings.model_fields
    )
)

RuntimeOverrides: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "RuntimeOverrides",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{
        name: (Settings.model_fields[name].annotation, setting_field(name))
        for name in RUNTIME_SETTINGS
    },
)


def parse_kind(text: str) -> ConfigKind | None:
    """``rules`` / ``experiments`` / ``config``, or None for ``""``; ValueError otherwise."""
    if not text:
        return None
    if text not in CONFIG_KINDS:
        raise ValueError(f"unknown kind {text!r} (one of {', '.join(CONFIG_KINDS)})")
    return text


def validate_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validated run-time overrides (setting name → value); ValueError with a one-line reason.

    Names must be in :data:`RUNTIME_SETTINGS`; values are checked against the setting's type
    and bounds (strings are parsed as the environment variable would be).
    """
    unknown = sorted(set(values) - set(RUNTIME_SETTINGS))
    if unknown:
        static = [n for n in unknown if n in Settings.model_fields]
        if static:
            raise ValueError(
                f"not changeable at run time: {', '.join(static)} (set them in the "
                "environment or STREAMREC_CONFIG_FILE and restart; run-time settings: "
                f"{', '.join(RUNTIME_SETTINGS)})"
            )
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} (`streamrec config` lists them)")
    try:
        model = RuntimeOverrides.model_validate(dict(values))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ValueError(f"{where}: {message} (got {first.get('input')!r})") from exc
    return model.model_dump(include=set(values))


def apply_overrides(base: RankerConfig, overrides: Mapping[str, Any]) -> RankerConfig:
    """``base`` with run-time overrides (``ranker_<field>`` names) applied."""
    params = {
        name.removeprefix(RANKER_PREFIX): value
        for name, value in overrides.items()
        if name in RUNTIME_SETTINGS
    }
    return base.with_overrides(params)


def effective_experiment(experiments: Mapping[str, ExperimentRecord]) -> ExperimentConfig | None:
    """The experiment config the servers apply (``P:exp``); None = the server's default.

    Running: its config. Paused: everyone gets the control arm (same name, same salt).
    Otherwise the newest promoted experiment: everyone gets the promoted variant. Stopped
    and draft experiments serve nothing.
    """
    live = [r for r in experiments.values() if r.status in ("running", "paused")]
    if live:
        record = max(live, key=lambda r: r.updated_at)
        if record.status == "running":
            return record.config
        return only_variant(record.config, record.control)
    promoted = [r for r in experiments.values() if r.status == "promoted"]
    if promoted:
        record = max(promoted, key=lambda r: r.updated_at)
        return only_variant(record.config, record.promoted_variant or record.control)
    return None


def only_variant(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """``config`` with one variant, ``name``, taking every unit."""
    variant = next(v for v in config.variants if v.name == name)
    solo = Variant(
        name=variant.name, share=1.0, params=variant.params, algo_version=variant.algo_version
    )
    # one arm takes everyone: nothing to allocate (a paused / promoted bandit is a fixed split)
    return config.model_copy(update={"variants": [solo], "allocation": "fixed"})


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _flatten(snapshot: Snapshot, kinds: tuple[ConfigKind, ...]) -> dict[str, str]:
    """Path → JSON value: rules and config per key, experiments per field of a record."""
    flat: dict[str, str] = {}
    doc = snapshot.model_dump(mode="json")
    for kind in kinds:
        for key, value in doc[kind].items():
            if kind == "experiments" and isinstance(value, dict):
                for field, inner in value.items():
                    flat[f"{kind}.{key}.{field}"] = _json(inner)
            else:
                flat[f"{kind}.{key}"] = _json(value)
    return flat


def diff(
    old: Snapshot, new: Snapshot, kinds: tuple[ConfigKind, ...] = CONFIG_KINDS
) -> list[Change]:
    """Every path whose value differs between two snapshots, sorted by path."""
    before, after = _flatten(old, kinds), _flatten(new, kinds)
    return [
        Change(path=path, old=before.get(path), new=after.get(path))
        for path in sorted(before.keys() | after.keys())
        if before.get(path) != after.get(path)
    ]


def changed_kinds(changes: list[Change]) -> list[ConfigKind]:
    """The kinds a diff touches, in :data:`CONFIG_KINDS` order."""
    touched = {c.path.partition(".")[0] for c in changes}
    return [k for k in CONFIG_KINDS if k in touched]


def restore(current: Snapshot, target: Snapshot, kind: ConfigKind | None) -> Snapshot:
    """``current`` with ``kind`` (every kind for None) as it is in ``target``."""
    kinds = CONFIG_KINDS if kind is None else (kind,)
    return current.model_copy(update={k: getattr(target, k) for k in kinds})
