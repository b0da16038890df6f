"""The committed gRPC stubs are exactly what scripts/gen-proto generates from the .proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import recommender_pb2 as pb
from tests.support import REPO

STUBS = (
    "recommender_pb2.py",
    "recommender_pb2.pyi",
    "recommender_pb2_grpc.py",
    "recommender_pb2_grpc.pyi",
)


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gen-proto"), str(tmp_path)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stale = [
        name
        for name in STUBS
        if (tmp_path / "schemas" / name).read_bytes() != (REPO / "schemas" / name).read_bytes()
    ]
    assert not stale, f"stale stubs {stale}: run scripts/gen-proto and commit the result"


@pytest.mark.parametrize(
    ("service", "methods"),
    [
        ("Recommender", ["Recommend", "SimilarItems"]),
        (
            "Admin",
            [
                "CreateRule",
                "ListRules",
                "DeleteRule",
                "DryRunRule",
                "GetAudit",
                "SetExperiment",
                "GetExperiment",
            ],
        ),
    ],
)
def test_services_are_in_package_streamrec_v1(service: str, methods: list[str]) -> None:
    descriptor = pb.DESCRIPTOR.services_by_name[service]
    assert descriptor.full_name == f"streamrec.v1.{service}"
    # the original methods first, in order (later issues append theirs)
    assert [m.name for m in descriptor.methods][: len(methods)] == methods
