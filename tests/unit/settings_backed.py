"""Checks of a dataclass config whose fields come from the settings (``setting_attr``).

Such a config declares no default of its own: each setting-backed field (``metadata["setting"]``,
optionally ``metadata["derive"]``) defaults to its setting's default, and ``from_settings`` takes
it from the settings. Import as ``from tests.unit.settings_backed import …``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from core.settings import Settings, setting_default


def setting_backed(config: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields of ``config`` that are built from a setting."""
    return [f for f in dataclasses.fields(config) if "setting" in f.metadata]


def _from(f: dataclasses.Field[Any], value: Any) -> Any:
    derive = f.metadata.get("derive")
    return value if derive is None else derive(value)


def assert_defaults_are_the_settings_defaults(config: type[Any]) -> None:
    """Every setting-backed field of ``config()`` equals its setting's declared default."""
    backed = setting_backed(config)
    assert backed, f"{config.__name__} has no setting-backed field"
    instance = config()
    for f in backed:
        expected = _from(f, setting_default(f.metadata["setting"]))
        assert getattr(instance, f.name) == expected, f.name


def assert_from_settings_maps_every_field(config: type[Any], **overrides: Any) -> Any:
    """``config.from_settings`` takes every setting-backed field from the settings.

    ``overrides`` must give each setting ``config`` reads a value other than its default, so a
    field left at its default (or read from the wrong setting) is caught. Returns the config.
    """
    read = {f.metadata["setting"] for f in setting_backed(config)}
    assert read <= set(overrides), f"not overridden: {sorted(read - set(overrides))}"
    for name in read:
        assert overrides[name] != setting_default(name), f"{name} is left at its default"
    settings = Settings(**overrides)
    instance = config.from_settings(settings)
    for f in setting_backed(config):
        expected = _from(f, getattr(settings, f.metadata["setting"]))
        assert getattr(instance, f.name) == expected, f.name
    return instance
