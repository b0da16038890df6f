"""serving.config_versions and the experiment lifecycle: pure snapshot logic, no I/O."""

from __future__ import annotations

import pytest

from schemas.admin import ExperimentRecord, Snapshot
from schemas.rules import ExperimentConfig
from serving.config import RankerConfig
from serving.config_versions import (
    RUNTIME_SETTINGS,
    apply_overrides,
    changed_kinds,
    diff,
    effective_experiment,
    parse_kind,
    restore,
    validate_overrides,
)
from serving.experiments import (
    LifecycleError,
    UnknownExperiment,
    create_experiment,
    experiment_record,
    move_experiment,
    promotion_refusal,
    set_running,
)

CONFIG = ExperimentConfig.model_validate(
    {
        "name": "exp",
        "variants": [
            {"name": "control", "share": 0.5},
            {"name": "beta", "share": 0.5, "params": {"popularity_exponent": 1.0}},
        ],
    }
)


def test_runtime_settings_are_the_ranker_settings() -> None:
    assert "ranker_max_anchors" in RUNTIME_SETTINGS
    assert all(name.startswith("ranker_") for name in RUNTIME_SETTINGS)
    assert "covis_window" not in RUNTIME_SETTINGS


def test_overrides_are_validated_like_the_settings() -> None:
    assert validate_overrides({"ranker_max_anchors": "5", "ranker_exclude_seen": False}) == {
        "ranker_max_anchors": 5,
        "ranker_exclude_seen": False,
    }
    for values, message in (
        ({"ranker_max_anchors": 0}, "ranker_max_anchors: Input should be greater than or equal"),
        ({"ranker_normalisation": "log"}, "ranker_normalisation"),
        ({"covis_window": 3}, "not changeable at run time: covis_window"),
        ({"nope": 1}, "unknown setting(s) nope"),
    ):
        with pytest.raises(ValueError, match=None) as info:
            validate_overrides(values)
        assert message in str(info.value)


def test_overrides_apply_to_the_ranker_config() -> None:
    base = RankerConfig()
    changed = apply_overrides(base, {"ranker_max_anchors": 3, "ranker_exclude_seen": False})
    assert (changed.max_anchors, changed.exclude_seen) == (3, False)
    assert apply_overrides(base, {}) == base


def test_diff_and_restore() -> None:
    old = Snapshot(rules={"r-1": {"kind": "block"}}, config={"ranker_max_anchors": 3})
    new = Snapshot(rules={"r-2": {"kind": "pin"}}, config={"ranker_max_anchors": 4})
    changes = diff(old, new)
    assert [(c.path, c.old, c.new) for c in changes] == [
        ("config.ranker_max_anchors", "3", "4"),
        ("rules.r-1", '{"kind":"block"}', None),
        ("rules.r-2", None, '{"kind":"pin"}'),
    ]
    assert changed_kinds(changes) == ["rules", "config"]
    assert diff(old, new, ("config",)) == changes[:1]
    assert restore(new, old, None) == old
    only_rules = restore(new, old, "rules")
    assert only_rules.rules == old.rules and only_rules.config == new.config
    assert parse_kind("") is None and parse_kind("rules") == "rules"
    with pytest.raises(ValueError, match="unknown kind 'x'"):
        parse_kind("x")


def test_lifecycle_moves() -> None:
    s = create_experiment(Snapshot(), CONFIG, by="ada", now=1.0)
    assert experiment_record(s, "exp").status == "draft"
    with pytest.raises(LifecycleError, match="exists"):
        create_experiment(s, CONFIG, by="ada", now=2.0)
    with pytest.raises(LifecycleError, match="is draft: it cannot become paused"):
        move_experiment(s, "exp", "paused", now=2.0)
    s = move_experiment(s, "exp", "running", now=2.0)
    assert experiment_record(s, "exp").started_at == 2.0
    other = CONFIG.model_copy(update={"name": "other"})
    s2 = create_experiment(s, other, by="ada", now=3.0)
    with pytest.raises(LifecycleError, match="'exp' is running: stop it first"):
        move_experiment(s2, "other", "running", now=3.0)
    with pytest.raises(UnknownExperiment, match="no experiment 'nope'"):
        move_experiment(s, "nope", "paused", now=3.0)
    s = move_experiment(s, "exp", "paused", now=3.0)
    s = move_experiment(s, "exp", "promoted", now=4.0, variant="beta", decision="ship")
    assert experiment_record(s, "exp").promoted_variant == "beta"
    with pytest.raises(LifecycleError, match="it is final"):
        move_experiment(s, "exp", "running", now=5.0)


def test_effective_experiment_by_status() -> None:
    s = create_experiment(Snapshot(), CONFIG, by="ada", now=1.0)

    def effective(snapshot: Snapshot) -> list[tuple[str, float]] | None:
        records = {n: ExperimentRecord.model_validate(r) for n, r in snapshot.experiments.items()}
        config = effective_experiment(records)
        return None if config is None else [(v.name, v.share) for v in config.variants]

    assert effective(s) is None  # draft serves nothing
    running = move_experiment(s, "exp", "running", now=2.0)
    assert effective(running) == [("control", 0.5), ("beta", 0.5)]
    paused = move_experiment(running, "exp", "paused", now=3.0)
    assert effective(paused) == [("control", 1.0)]
    promoted = move_experiment(paused, "exp", "promoted", now=4.0, variant="beta")
    assert effective(promoted) == [("beta", 1.0)]
    stopped = move_experiment(running, "exp", "stopped", now=5.0)
    assert effective(stopped) is None
    replaced = set_running(running, CONFIG.model_copy(update={"name": "b"}), by="x", now=6.0)
    assert experiment_record(replaced, "exp").status == "stopped"
    assert experiment_record(replaced, "b").status == "running"


def test_promotion_needs_ship_and_thirty_users_per_arm() -> None:
    record = ExperimentRecord(config=CONFIG, status="running")
    enough = {"control": 30, "beta": 31}
    assert promotion_refusal(record, decision="ship", users_per_arm=enough) is None
    hold = promotion_refusal(record, decision="hold", users_per_arm=enough)
    assert hold is not None and "eval ab says hold" in hold
    few = promotion_refusal(record, decision="ship", users_per_arm={"control": 29, "beta": 40})
    assert few == "too few users to decide: control 29 (at least 30 per arm)"
