"""The monitoring configs declare no default of their own: each is a setting's (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from monitoring.alerting import AlertPolicy
from monitoring.drift import DriftThresholds
from monitoring.health import HealthThresholds
from monitoring.monitor import MonitorConfig
from monitoring.retune import RetuneConfig
from monitoring.windows import WindowConfig
from tests.unit.settings_backed import (
    assert_defaults_are_the_settings_defaults,
    assert_from_settings_maps_every_field,
)

#: For each config, a valid non-default value of every setting it reads.
OVERRIDES: dict[type[Any], dict[str, Any]] = {
    HealthThresholds: {
        "lag_warn": 20,
        "lag_crit": 200,
        "freshness_warn_s": 61.0,
        "freshness_crit_s": 301.0,
        "event_lag_p99_warn_s": 31.0,
        "event_lag_p99_crit_s": 302.0,
    },
    DriftThresholds: {
        "drift_volume_ratio": 3.0,
        "drift_mix_psi": 0.3,
        "drift_items_js": 0.2,
        "drift_top_items": 20,
        "drift_coldstart_delta": 0.2,
        "drift_ctr_rel_drop": 0.4,
        "drift_ctr_z": 4.0,
        "drift_ctr_min_impressions": 2000,
        "deadletter_rate_warn": 0.02,
        "deadletter_rate_crit": 0.1,
        "drift_min_events": 600,
        "drift_plan_kl": 0.2,
        "drift_plan_ctr_drop": 0.2,
        "drift_plan_ctr_z": 2.5,
        "drift_plan_volume_change": 0.4,
        "drift_plan_coldstart_change": 0.3,
    },
    RetuneConfig: {"drift_plan_ctr_sustain_s": 600.0, "drift_window_s": 60.0},
    AlertPolicy: {"alert_min_duration_s": 30.0, "alert_clear_ratio": 0.9, "alert_stale_s": 600.0},
    WindowConfig: {
        "drift_bucket_s": 5.0,
        "drift_window_s": 60.0,
        "drift_reference_windows": 6,
        "drift_top_items": 20,
        "drift_seen_capacity": 5000,
    },
}
CONFIGS = [*OVERRIDES, MonitorConfig]
EVERY_OVERRIDE = {name: v for o in OVERRIDES.values() for name, v in o.items()}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_defaults_are_the_settings_defaults(config: type[Any]) -> None:
    assert_defaults_are_the_settings_defaults(config)


@pytest.mark.parametrize("config", list(OVERRIDES), ids=lambda c: c.__name__)
def test_from_settings_maps_every_field(config: type[Any]) -> None:
    assert_from_settings_maps_every_field(config, **OVERRIDES[config])


def test_fields_that_are_no_setting_keep_their_defaults() -> None:
    window = assert_from_settings_maps_every_field(WindowConfig, **OVERRIDES[WindowConfig])
    assert (window.item_capacity, window.seen_fp_rate) == (4 * 20, WindowConfig().seen_fp_rate)
    drift = assert_from_settings_maps_every_field(DriftThresholds, **OVERRIDES[DriftThresholds])
    assert drift.ctr_min_reference_clicks == DriftThresholds().ctr_min_reference_clicks == 30


def test_monitor_config_from_settings_builds_every_part() -> None:
    overrides = {**EVERY_OVERRIDE, "freshness_topics": ("outcomes",)}
    config = assert_from_settings_maps_every_field(MonitorConfig, **overrides)
    settings = Settings(**overrides)
    assert config == MonitorConfig(
        window=WindowConfig.from_settings(settings),
        drift=DriftThresholds.from_settings(settings),
        alerts=AlertPolicy.from_settings(settings),
        health=HealthThresholds.from_settings(settings),
        retune=RetuneConfig.from_settings(settings),
        freshness_topics=("outcomes",),
    )
    assert config.window != WindowConfig() and config.health != HealthThresholds()
