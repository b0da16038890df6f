"""``eval tune``'s pure parts: the search space, the user sample, the TOML config writer."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import Settings, load_settings
from evaluation.datasets import DatasetFormat
from evaluation.protocol import PrequentialSpec
from evaluation.tune import (
    SPACE,
    TuneSpec,
    config_values,
    declared_bounds,
    render_toml,
    sample_space,
    write_config,
)


@pytest.mark.parametrize("param", SPACE, ids=lambda p: p.name)
def test_every_range_lies_within_the_settings_declared_bounds(param: object) -> None:
    from evaluation.tune import Param

    assert isinstance(param, Param)
    if param.choices:
        for choice in param.choices:  # each choice passes the setting's own validation
            assert getattr(load_settings(**{param.name: choice}), param.name) == choice
        return
    low, high, low_in, high_in = declared_bounds(param.name)
    assert param.low < param.high
    assert param.low >= low if low_in else param.low > low
    assert param.high <= high if high_in else param.high < high
    if param.log:
        assert param.low > 0
    assert param.integer == (Settings.model_fields[param.name].annotation is int)


def test_time_constants_are_searched_on_log_scales() -> None:
    for param in SPACE:
        if param.name.endswith("_s"):
            assert param.log, param.name


def test_the_space_covers_covis_ranker_and_session_neighbour_settings() -> None:
    names = {p.name for p in SPACE}
    assert {
        "covis_window",
        "covis_session_gap_s",
        "covis_distance_decay",
        "covis_backward_weight",
        "covis_half_life_s",
        "covis_self_weight",
        "ranker_max_anchors",
        "ranker_anchor_position_decay",
        "ranker_anchor_decay_s",
        "ranker_normalisation",
        "ranker_popularity_exponent",
        "ranker_neighbours_per_anchor",
        "ranker_session_blend",
        "ranker_session_neighbours",
        "ranker_session_sample",
        "ranker_session_items",
        "session_index_sessions_per_item",
    } == names


def test_seeded_samples_are_reproducible_and_valid_settings() -> None:
    first = sample_space(seed=5, n=12)
    assert first == sample_space(seed=5, n=12)
    assert first != sample_space(seed=6, n=12)
    for values in first:
        assert set(values) == {p.name for p in SPACE}
        for param in SPACE:
            value = values[param.name]
            if param.choices:
                assert value in param.choices
            else:
                assert param.low <= value <= param.high
                assert isinstance(value, int) == param.integer
        built = load_settings(**values)  # every proposal is a valid set of settings
        assert all(getattr(built, name) == value for name, value in values.items())


def test_floats_are_rounded_to_five_significant_digits() -> None:
    for values in sample_space(seed=1, n=5):
        for param in SPACE:
            value = values[param.name]
            if isinstance(value, float) and value:
                digits = 5 - 1 - math.floor(math.log10(abs(value)))
                assert value == round(value, digits)


def test_the_user_sample_is_seeded_and_about_the_fraction() -> None:
    users = [f"u{i}" for i in range(4000)]
    spec = PrequentialSpec(DatasetFormat.MOVIELENS, Path("x"), sample=0.25, seed=3)
    picked = [u for u in users if spec.in_sample(u)]
    assert 0.22 < len(picked) / len(users) < 0.28
    again = PrequentialSpec(DatasetFormat.MOVIELENS, Path("y"), sample=0.25, seed=3)
    assert picked == [u for u in users if again.in_sample(u)]
    other = PrequentialSpec(DatasetFormat.MOVIELENS, Path("x"), sample=0.25, seed=4)
    assert picked != [u for u in users if other.in_sample(u)]
    whole = PrequentialSpec(DatasetFormat.MOVIELENS, Path("x"), sample=1.0)
    assert all(whole.in_sample(u) for u in users)
    assert all(PrequentialSpec(DatasetFormat.MOVIELENS, Path("x")).in_sample(u) for u in users)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_a_sample_outside_0_1_is_refused(bad: float) -> None:
    spec = PrequentialSpec(DatasetFormat.MOVIELENS, Path("x"), sample=bad)
    with pytest.raises(ConfigError, match="--sample must be in"):
        spec.resolved_protocol()


def test_tune_needs_a_holdout_and_a_known_metric() -> None:
    replay = PrequentialSpec(DatasetFormat.MOVIELENS, Path("x"), holdout_days=14)
    TuneSpec(replay).check()
    with pytest.raises(ConfigError, match="needs --holdout-days"):
        TuneSpec(PrequentialSpec(DatasetFormat.MOVIELENS, Path("x"))).check()
    with pytest.raises(ConfigError, match="--metric"):
        TuneSpec(replay, metric="auc").check()
    with pytest.raises(ConfigError, match="--trials"):
        TuneSpec(replay, trials=0).check()


def test_the_config_file_round_trips_through_load_settings(tmp_path: Path) -> None:
    values = {
        "covis_window": 23,
        "covis_half_life_s": 3153600000.0,
        "covis_distance_decay": 0.81234,
        "ranker_normalisation": "none",
        "ranker_exclude_seen": False,
        "ranker_session_blend": 0.0,
    }
    path = tmp_path / "tuned.toml"
    write_config(path, values, ["tuned by a test", "second line\nthird line"])
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# tuned by a test\n# second line\n# third line\n\n")
    assert tomllib.loads(text) == values
    loaded = load_settings(config_file=str(path))
    for name, value in values.items():
        assert getattr(loaded, name) == value
    assert render_toml({"a": 'say "hi"'}) == 'a = "say \\"hi\\""\n'


def test_config_values_keep_what_the_effective_file_set(tmp_path: Path) -> None:
    start = tmp_path / "start.toml"
    start.write_text('profile = "ratings"\ncovis_top_k = 50\ncovis_window = 7\n')
    base = load_settings(config_file=str(start))
    values = config_values(base, {"covis_window": 30})
    assert values == {"profile": "ratings", "covis_top_k": 50, "covis_window": 30}
    assert config_values(load_settings(), {"covis_window": 30}) == {"covis_window": 30}


def test_an_unwritable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        write_config(tmp_path / "missing" / "x.toml", {"covis_window": 3})
