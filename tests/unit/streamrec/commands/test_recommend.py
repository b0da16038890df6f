"""``streamrec recommend`` against a stand-in gRPC server: output, errors, deadline."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from core.errors import ConfigError, UnavailableError
from core.settings import Settings, load_settings
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from serving.servicer import NO_STATE
from streamrec.commands.recommend import recommend, render, report
from tests.support import run_cli, stderr_lines

ANSWER = pb.RecommendResponse(
    request_id="r" * 32,
    items=[
        pb.ScoredItem(item_id="b", score=0.75, reasons=["co-viewed with a"]),
        pb.ScoredItem(item_id="s0", score=0.125, reasons=["trending in shop/home", "new"]),
    ],
    variant="control",
    algo_version="covis-v1",
    fallback_stage=pb.FALLBACK_STAGE_SEGMENT_POPULARITY,
    state_age_seconds=2.5,
)


class _StandIn(pb_grpc.RecommenderServicer):
    def __init__(self) -> None:
        self.requests: list[pb.RecommendRequest] = []
        self.delay_s = 0.0

    def Recommend(self, request: Any, context: Any) -> pb.RecommendResponse:
        self.requests.append(request)
        if request.user_id == "bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id: not\nallowed")
        if request.user_id == "stateless":
            context.abort(grpc.StatusCode.UNAVAILABLE, NO_STATE)
        time.sleep(self.delay_s)
        return ANSWER

    def SimilarItems(self, request: Any, context: Any) -> pb.RecommendResponse:
        return ANSWER


@pytest.fixture
def stand_in() -> Iterator[tuple[_StandIn, Settings]]:
    servicer = _StandIn()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, load_settings(grpc_addr=f"127.0.0.1:{port}", network_timeout_s=2.0)
    finally:
        server.stop(None)


def test_one_call_with_user_and_k(stand_in: tuple[_StandIn, Settings]) -> None:
    servicer, settings = stand_in
    response = recommend(settings, "u1", 2)
    assert response == ANSWER
    assert [(r.user_id, r.k) for r in servicer.requests] == [("u1", 2)]


def test_json_document_and_plain_lines() -> None:
    doc = report("u1", 2, ANSWER)
    assert json.loads(json.dumps(doc)) == {
        "user": "u1",
        "k": 2,
        "request_id": "r" * 32,
        "variant": "control",
        "algo_version": "covis-v1",
        "fallback_stage": "FALLBACK_STAGE_SEGMENT_POPULARITY",
        "state_age_seconds": 2.5,
        "degraded": False,
        "items": [
            {"item_id": "b", "score": 0.75, "reasons": ["co-viewed with a"]},
            {"item_id": "s0", "score": 0.125, "reasons": ["trending in shop/home", "new"]},
        ],
    }
    lines = render(doc).splitlines()
    assert lines[0] == (
        f"u1: 2 items, variant control, fallback segment_popularity, request {'r' * 32}"
    )
    assert lines[1].split() == ["1", "b", "0.7500", "co-viewed", "with", "a"]
    assert lines[2].endswith("trending in shop/home; new")
    empty = render(report("u2", 5, pb.RecommendResponse(degraded=True)))
    assert empty.splitlines() == [
        "u2: 0 items, variant -, fallback none (degraded: state unreadable, in-process caches only)"
    ]


def test_rejected_request_is_a_config_error(stand_in: tuple[_StandIn, Settings]) -> None:
    _, settings = stand_in
    with pytest.raises(ConfigError, match=r"rejected the request: user_id: not allowed$"):
        recommend(settings, "bad", 2)


def test_a_server_without_state_is_named_as_such(stand_in: tuple[_StandIn, Settings]) -> None:
    _, settings = stand_in
    with pytest.raises(UnavailableError, match=r"answered: no recommendation state") as caught:
        recommend(settings, "stateless", 2)
    assert "does not answer" not in str(caught.value)


def test_slow_server_hits_the_deadline(stand_in: tuple[_StandIn, Settings]) -> None:
    servicer, settings = stand_in
    servicer.delay_s = 1.0
    # the server would answer after 1 s: an error means the 0.2 s deadline cut the call short
    with pytest.raises(UnavailableError, match="does not answer"):
        recommend(settings.model_copy(update={"network_timeout_s": 0.2}), "u1", 2)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("recommend", "u1", "--k", "0"), "Invalid value for '--k'"),
        (("recommend", "u1", "--k", "-3"), "Invalid value for '--k'"),
        (("recommend", "", "--json"), "USER must not be empty"),
        (("recommend", "  "), "USER must not be empty"),
        (("recommend",), "Missing argument 'USER'"),
    ],
)
def test_bad_arguments_give_one_line(args: tuple[str, ...], expected: str) -> None:
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrec: error: ") and expected in lines[0]
    assert result.stdout == ""


def test_no_server_is_one_line() -> None:
    with socket.socket() as sock:  # a free port: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    result = run_cli("recommend", "u1", "--json", env={"STREAMREC_GRPC_ADDR": f"127.0.0.1:{port}"})
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"streamrec: error: server at 127.0.0.1:{port} does not answer")
    assert "Traceback" not in result.stderr and result.stdout == ""
