"""Settings from a TOML config file and named profiles, below the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import SettingsError
from core.profiles import PROFILES
from core.settings import Settings, load_settings, setting_default
from tests.support import run_cli


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STREAMREC_CONFIG_FILE", "STREAMREC_PROFILE", "STREAMREC_COVIS_WINDOW"):
        monkeypatch.delenv(name, raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_is_environment_then_file_then_profile_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ratings = PROFILES["ratings"].values
    assert load_settings().covis_window == setting_default("covis_window")
    monkeypatch.setenv("STREAMREC_PROFILE", "ratings")
    assert load_settings().covis_window == ratings["covis_window"]
    config = write(tmp_path / "c.toml", "covis_window = 12\n")
    monkeypatch.setenv("STREAMREC_CONFIG_FILE", str(config))
    both = load_settings()
    assert both.covis_window == 12
    assert both.ranker_max_anchors == ratings["ranker_max_anchors"]  # still the profile's
    monkeypatch.setenv("STREAMREC_COVIS_WINDOW", "7")
    assert load_settings().covis_window == 7


def test_the_file_may_name_the_profile_and_keyword_arguments_win(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", 'profile = "ratings"\nranker_max_anchors = 3\n')
    loaded = load_settings(config_file=str(config))
    assert loaded.profile == "ratings"
    assert loaded.ranker_max_anchors == 3
    assert loaded.covis_window == PROFILES["ratings"].values["covis_window"]
    assert load_settings(config_file=str(config), ranker_max_anchors=4).ranker_max_anchors == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", r"unknown setting\(s\) bogus"),
        ("covis_window = [\n", "is not TOML"),
        ('profile = "films"\n', "unknown profile 'films'"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "c.toml", text)
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings(config_file=str(config))
    assert "\n" not in str(caught.value)


def test_a_value_out_of_bounds_in_the_file_names_the_setting(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "covis_window = 0\n")
    with pytest.raises(SettingsError, match="STREAMREC_COVIS_WINDOW"):
        load_settings(config_file=str(config))


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(config_file=str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_names_real_settings_with_valid_values(name: str) -> None:
    assert set(PROFILES[name].values) <= set(Settings.model_fields)
    loaded = load_settings(profile=name)
    for setting, value in PROFILES[name].values.items():
        assert getattr(loaded, setting) == value


def test_config_command_shows_each_values_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "c.toml", 'profile = "ratings"\ncovis_window = 12\n')
    monkeypatch.setenv("STREAMREC_CONFIG_FILE", str(config))
    monkeypatch.setenv("STREAMREC_RANKER_MAX_ANCHORS", "9")
    result = run_cli("config", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["env"]: row for row in json.loads(result.stdout)}
    assert rows["STREAMREC_COVIS_WINDOW"]["value"] == 12
    assert rows["STREAMREC_COVIS_WINDOW"]["source"] == "file"
    assert rows["STREAMREC_PROFILE"]["source"] == "file"
    assert rows["STREAMREC_RANKER_ANCHOR_DECAY_S"]["source"] == "profile ratings"
    assert rows["STREAMREC_RANKER_MAX_ANCHORS"]["source"] == "env"
    assert rows["STREAMREC_PARTITIONS"]["source"] == "default"
