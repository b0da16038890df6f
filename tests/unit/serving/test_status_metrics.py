"""AnswerStatusInterceptor counts every unary answer once, by service, method, code and surface.

A grpc.aio server on loopback with a scripted Recommender servicer (no Redis), the real
MalformedRequestInterceptor inside the counting one, as in serving/server.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.metrics import RECOMMENDER_SERVICE, SURFACE_OTHER
from serving import metrics
from serving.metrics import SurfaceLabels
from serving.request_guard import MalformedRequestInterceptor
from serving.status_metrics import AnswerStatusInterceptor, split_method


class Scripted(pb_grpc.RecommenderServicer):
    """Answers by user id: ok, abort-invalid, abort-unavailable, raise, set-code."""

    async def Recommend(
        self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecommendResponse:
        match request.user_id:
            case "invalid":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")
            case "empty":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "no state")
            case "boom":
                raise RuntimeError("handler bug")
            case "set-code":
                context.set_code(grpc.StatusCode.NOT_FOUND)
        return pb.RecommendResponse(request_id="r")

    async def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RecommendResponse:
        return pb.RecommendResponse(request_id="s")


def answers(service: str, method: str, code: str, surface: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "streamrec_grpc_answers_total",
        {"service": service, "method": method, "code": code, "surface": surface},
    )
    return value or 0.0


@contextlib.asynccontextmanager
async def serving(*, guarded: bool) -> AsyncIterator[grpc.aio.Channel]:
    interceptors: list[Any] = [AnswerStatusInterceptor(SurfaceLabels(("home", "pdp")))]
    if guarded:
        interceptors.append(MalformedRequestInterceptor())
    server = grpc.aio.server(interceptors=interceptors)
    pb_grpc.add_RecommenderServicer_to_server(Scripted(), server)
    aio: Any = health.aio  # type: ignore[attr-defined]  # not in the stubs
    health_pb2_grpc.add_HealthServicer_to_server(aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        await server.stop(0)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    """A server with the request guard inside the counter, as serving/server.py builds it."""
    async with serving(guarded=True) as chan:
        yield chan


async def call(channel: grpc.aio.Channel, user: str, surface: str = "") -> grpc.StatusCode:
    stub = pb_grpc.RecommenderStub(channel)
    request = pb.RecommendRequest(user_id=user, context=pb.Context(surface=surface))
    try:
        await stub.Recommend(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


CASES = [
    ("ok", "pdp", grpc.StatusCode.OK, "pdp"),
    ("ok", "", grpc.StatusCode.OK, "home"),  # empty surface = the default one
    ("ok", "checkout-v2", grpc.StatusCode.OK, SURFACE_OTHER),  # not listed: bounded
    ("invalid", "home", grpc.StatusCode.INVALID_ARGUMENT, "home"),
    ("empty", "pdp", grpc.StatusCode.UNAVAILABLE, "pdp"),
    ("boom", "home", grpc.StatusCode.INTERNAL, "home"),  # the guard turns it into INTERNAL
    ("set-code", "home", grpc.StatusCode.NOT_FOUND, "home"),
]


@pytest.mark.parametrize(("user", "surface", "code", "label"), CASES)
async def test_each_answer_is_counted_once_with_its_code_and_surface(
    channel: grpc.aio.Channel, user: str, surface: str, code: grpc.StatusCode, label: str
) -> None:
    before = answers(RECOMMENDER_SERVICE, "Recommend", code.name, label)
    others = sum(
        answers(RECOMMENDER_SERVICE, "Recommend", c.name, s)
        for c in grpc.StatusCode
        for s in ("home", "pdp", SURFACE_OTHER)
    )
    assert await call(channel, user, surface) is code
    assert answers(RECOMMENDER_SERVICE, "Recommend", code.name, label) == before + 1
    total = sum(
        answers(RECOMMENDER_SERVICE, "Recommend", c.name, s)
        for c in grpc.StatusCode
        for s in ("home", "pdp", SURFACE_OTHER)
    )
    assert total == others + 1


async def test_an_exception_escaping_an_unguarded_handler_is_counted_unknown() -> None:
    async with serving(guarded=False) as chan:
        before = answers(RECOMMENDER_SERVICE, "Recommend", "UNKNOWN", "pdp")
        assert await call(chan, "boom", "pdp") is grpc.StatusCode.UNKNOWN
        assert answers(RECOMMENDER_SERVICE, "Recommend", "UNKNOWN", "pdp") == before + 1


async def test_a_guard_rejection_is_counted_with_surface_other(channel: grpc.aio.Channel) -> None:
    """An undecodable payload is rejected by MalformedRequestInterceptor, inside the counter."""
    before = answers(RECOMMENDER_SERVICE, "Recommend", "INVALID_ARGUMENT", SURFACE_OTHER)
    raw = channel.unary_unary(f"/{RECOMMENDER_SERVICE}/Recommend", None, None)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(b"\xff\xff\xff", timeout=5)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    after = answers(RECOMMENDER_SERVICE, "Recommend", "INVALID_ARGUMENT", SURFACE_OTHER)
    assert after == before + 1


async def test_other_services_have_no_surface_and_unknown_methods_are_bounded(
    channel: grpc.aio.Channel,
) -> None:
    health = "grpc.health.v1.Health"
    before = answers(health, "Check", "NOT_FOUND", "")
    stub = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError):  # no status set for this service name
        await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert answers(health, "Check", "NOT_FOUND", "") == before + 1

    before = answers(SURFACE_OTHER, SURFACE_OTHER, "UNIMPLEMENTED", "")
    for name in ("/x.Y/Z", "/streamrec.v1.Recommender/Nope"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(name, None, None)(b"", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert answers(SURFACE_OTHER, SURFACE_OTHER, "UNIMPLEMENTED", "") == before + 2


def test_split_method() -> None:
    assert split_method("/streamrec.v1.Recommender/Recommend") == (
        RECOMMENDER_SERVICE,
        "Recommend",
    )
    for bad in ("", "/", "Recommend", "/a/b/c", "//b", "/a/"):
        assert split_method(bad) == (SURFACE_OTHER, SURFACE_OTHER), bad


def test_surface_labels_are_bounded() -> None:
    labels = SurfaceLabels(("home", "pdp"))
    assert [labels(s) for s in ("", "home", "pdp", "cart", "x" * 500)] == [
        "home",
        "home",
        "pdp",
        SURFACE_OTHER,
        SURFACE_OTHER,
    ]
