"""streamrec admin: argument parsing, settings-file splitting, the experiment's own logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from evaluation import Metric, read_logs
from evaluation.synth import ArmSpec, synthetic_experiment, write_jsonl
from schemas import recommender_pb2 as pb
from streamrec.commands.admin.config import parse_assignment, split_file_settings
from streamrec.commands.admin.experiments import experiment_logs, judge


def test_parse_assignment() -> None:
    assert parse_assignment("ranker_max_anchors=5") == ("ranker_max_anchors", "5")
    assert parse_assignment("ranker_exclude_seen=false") == ("ranker_exclude_seen", "false")
    assert parse_assignment("ranker_normalisation=row") == ("ranker_normalisation", '"row"')
    for bad in ("novalue", "=3"):
        with pytest.raises(typer.BadParameter, match="KEY=VALUE"):
            parse_assignment(bad)


def test_split_file_settings() -> None:
    live, static, unknown = split_file_settings(
        {"ranker_max_anchors": 4, "covis_window": 20, "profile": "ratings", "zzz": 1},
        {"ranker_max_anchors"},
    )
    assert live == {"ranker_max_anchors": 4}
    assert static == ["covis_window", "profile"]
    assert unknown == ["zzz"]


def test_judge_reads_only_the_experiments_own_logs(tmp_path: Path) -> None:
    start = 1_800_000_000.0
    synth = synthetic_experiment(
        [ArmSpec("control", ctr=0.10), ArmSpec("beta", ctr=0.20), ArmSpec("other")],
        users=3000,
        start_ts=start,
    )
    logs = read_logs(
        write_jsonl(tmp_path / "e.jsonl", synth.exposures),
        write_jsonl(tmp_path / "o.jsonl", synth.outcomes),
    )
    own = experiment_logs(logs, {"control", "beta"}, since=start + 100)
    assert own.exposures and {e.variant for e in own.exposures} == {"control", "beta"}
    assert min(e.ts.timestamp() for e in own.exposures) >= start + 100
    kept = {e.request_id for e in own.exposures}
    assert all(o.request_id in kept for o in own.outcomes)
    info = pb.ExperimentInfo(
        name="exp",
        config_json=json.dumps(
            {
                "name": "exp",
                "variants": [{"name": "control", "share": 0.5}, {"name": "beta", "share": 0.5}],
            }
        ),
        control="control",
    )
    evidence = judge(info, logs, Metric.CTR, mde=0.3)
    assert (evidence.decision, evidence.winner) == ("ship", "beta"), evidence.report
    assert set(evidence.users_per_arm) == {"control", "beta"}
    assert min(evidence.users_per_arm.values()) > 300
