"""RankerConfig (serving.config): the ranker_* settings' defaults and bounds, declared once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.errors import SettingsError
from core.settings import Settings, load_settings, setting_default
from serving.config import RankerConfig

SETTING_BACKED = [name for name in RankerConfig.model_fields if name != "backfill_depth"]


@pytest.mark.parametrize("name", SETTING_BACKED)
def test_default_is_the_settings_default(name: str) -> None:
    assert getattr(RankerConfig(), name) == setting_default(f"ranker_{name}")


def test_from_settings_takes_every_ranker_setting() -> None:
    settings = Settings(
        ranker_max_anchors=3, ranker_normalisation="none", ranker_exclude_seen=False
    )
    config = RankerConfig.from_settings(settings)
    assert (config.max_anchors, config.normalisation, config.exclude_seen) == (3, "none", False)
    for name in SETTING_BACKED:
        assert getattr(config, name) == getattr(settings, f"ranker_{name}"), name


@pytest.mark.parametrize(
    ("name", "bad"),
    [("max_anchors", 0), ("max_anchors", 101), ("anchor_decay_s", 0.0), ("demote_factor", 1.5)],
)
def test_bounds_are_the_settings_bounds(name: str, bad: float) -> None:
    with pytest.raises(ValidationError):
        RankerConfig(**{name: bad})
    with pytest.raises(SettingsError):
        load_settings(**{f"ranker_{name}": bad})
    with pytest.raises(ValueError, match=name):
        RankerConfig().with_overrides({name: bad})
