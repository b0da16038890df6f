"""Settings: defaults, one-line errors naming the variable, and the CLI's handling of them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.errors import ConfigError, SettingsError, StreamrecError
from core.settings import (
    DEFAULT_KAFKA_BOOTSTRAP,
    DEFAULT_REDIS_URL,
    Settings,
    load_settings,
    setting_attr,
    setting_default,
    settings_values,
)
from tests.support import run_cli, stderr_lines


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment without STREAMREC_* variables."""
    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)


def test_defaults_point_at_the_local_stack() -> None:
    current = load_settings()
    assert current.kafka_bootstrap == DEFAULT_KAFKA_BOOTSTRAP == "127.0.0.1:19092"
    assert current.redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:16379/0"
    assert current.kafka_is_local_default
    assert current.redis_is_local_default
    assert current.kafka_libs_dir is None
    assert current.home == Path.home() / ".cache" / "streamrec"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "10.0.0.5:9092,10.0.0.6:9092")
    monkeypatch.setenv("STREAMREC_HOME", str(tmp_path))
    monkeypatch.setenv("STREAMREC_KAFKA_LIBS_DIR", str(tmp_path / "jars"))
    current = load_settings()
    assert not current.kafka_is_local_default
    assert current.home == tmp_path
    assert current.kafka_libs_dir == tmp_path / "jars"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAMREC_REDIS_URL", "not-a-url"),
        ("STREAMREC_REDIS_URL", "http://127.0.0.1:6379"),
        ("STREAMREC_KAFKA_BOOTSTRAP", "localhost"),
        ("STREAMREC_KAFKA_BOOTSTRAP", "127.0.0.1:99999"),
        ("STREAMREC_PARTITIONS", "0"),
        ("STREAMREC_PARTITIONS", "many"),
        ("STREAMREC_KAFKA_HEAP", "lots"),
        ("STREAMREC_TOPIC_PREFIX", "bad prefix!"),
        ("STREAMREC_GRPC_ADDR", ":50051"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{variable}:")
    assert "\n" not in message
    # one hierarchy: the CLI maps every StreamrecError to one line and exit code 2
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, StreamrecError)
    assert not caught.value.retriable


def test_settings_are_frozen() -> None:
    current = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        current.partitions = 8  # type: ignore[misc]
    assert isinstance(current, Settings)


@dataclass(frozen=True)
class _Config:
    top_items: int = setting_attr("drift_top_items")
    capacity: int = setting_attr("drift_top_items", derive=lambda n: 4 * n)
    weights: Mapping[str, float] = setting_attr("event_weights")
    own: int = 3


def test_setting_attr_defaults_and_settings_values() -> None:
    """A dataclass field defaults to its setting's default (or derive of it); no shared dict."""
    config = _Config()
    assert (config.top_items, config.capacity, config.own) == (50, 200, 3)
    assert config.weights == setting_default("event_weights")
    assert config.weights is not _Config().weights
    settings = load_settings(drift_top_items=7, event_weights={"view": 0.5})
    values = settings_values(_Config, settings)
    assert values == {"top_items": 7, "capacity": 28, "weights": {"view": 0.5}}
    assert values["weights"] is not settings.event_weights


def test_cli_prints_one_line_and_exits_non_zero_on_a_bad_setting() -> None:
    result = run_cli("stack", "status", env={"STREAMREC_REDIS_URL": "not-a-url"}, timeout=60)
    assert result.returncode != 0
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrec: error: STREAMREC_REDIS_URL:")
    assert "not-a-url" in lines[0]
    assert result.stdout == ""
