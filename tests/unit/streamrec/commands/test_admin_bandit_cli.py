"""streamrec admin experiments create --allocation / --min-share (issue 20; no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError
from schemas import recommender_pb2 as pb
from schemas.rules import ExperimentConfig
from streamrec.commands.admin import experiments

CONFIG = {"name": "bx", "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}]}


def test_create_sets_the_allocation_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[Any] = []

    def call(method: str, request: Any) -> pb.ExperimentInfo:
        sent.append((method, request))
        return pb.ExperimentInfo(
            name="bx", status="draft", control="a", config_json=request.config_json, version=3
        )

    monkeypatch.setattr(experiments, "call", call)
    path = tmp_path / "bx.json"
    path.write_text(json.dumps(CONFIG))
    experiments.create(path, allocation=experiments.Allocation.bandit, min_share=0.2)
    ((method, request),) = sent
    assert method == "CreateExperiment"
    config = ExperimentConfig.model_validate_json(request.config_json)
    assert (config.allocation, config.min_share) == ("bandit", 0.2)
    assert "bandit (min share 0.2)" in capsys.readouterr().out
    # without the options the file is sent as written (fixed split)
    experiments.create(path)
    assert sent[-1][1].config_json == path.read_text()


def test_create_with_options_refuses_a_file_that_is_not_a_json_object(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        experiments.create(path, allocation=experiments.Allocation.bandit)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not JSON"):
        experiments.create(path, min_share=0.1)
