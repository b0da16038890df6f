"""SharedState applies the Admin run-time settings overrides (P:cfg) on refresh (fakeredis)."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from schemas.keyspace import Keyspace
from serving.config import RankerConfig
from serving.shared_state import SharedState
from serving.state_reader import StateReader

KEYS = Keyspace("ut")


async def test_overrides_reach_the_base_config_and_every_variant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    shared = SharedState(
        StateReader(client, KEYS, retry_after_s=60.0),
        base_config=RankerConfig(max_anchors=10),
        algo_version="t",
        last_known_file=tmp_path / "lk.json",
    )
    experiment = {
        "name": "e",
        "variants": [
            {"name": "control", "share": 0.5},
            {"name": "beta", "share": 0.5, "params": {"popularity_exponent": 1.0}},
        ],
    }
    await client.set(KEYS.experiments, json.dumps(experiment))
    await client.set(KEYS.runtime_config, json.dumps({"ranker_max_anchors": 3}))
    assert await shared.refresh()
    assert shared.base_config.max_anchors == 3
    assert shared.runtime_overrides == {"ranker_max_anchors": 3}
    beta = shared.plan.variant_config("beta")
    assert beta is not None and (beta.max_anchors, beta.popularity_exponent) == (3, 1.0)

    await client.set(KEYS.runtime_config, json.dumps({"ranker_max_anchors": 0}))
    assert await shared.refresh()
    assert shared.base_config.max_anchors == 3  # a bad document is ignored, logged
    assert "ignoring stored run-time config" in caplog.text

    await client.delete(KEYS.runtime_config)
    assert await shared.refresh()
    assert shared.base_config.max_anchors == 10
    control = shared.plan.variant_config("control")
    assert control is not None and control.max_anchors == 10
    await client.aclose()
