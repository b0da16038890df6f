"""The request guard on an in-process grpc.aio server: a status and one log line per failure."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckRequest as Req
from grpc_health.v1.health_pb2 import HealthCheckResponse as Resp

from core.settings import load_settings
from serving import metrics
from serving.edge import EdgePolicy, Scope
from serving.request_guard import MalformedRequestInterceptor

OK = Resp(status=Resp.SERVING)


class Broken:
    """Handlers of the service ``t.Svc`` that fail in each way a servicer can."""

    def __init__(self) -> None:
        self.calls = 0

    async def Good(self, request: Req, context: Any) -> Resp:
        self.calls += 1
        return OK

    async def Boom(self, request: Req, context: Any) -> Resp:
        raise RuntimeError("a bug\nwith a second line")

    def Unimplemented(self, request: Req, context: Any) -> Resp:  # like a generated base class
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        raise NotImplementedError("Method not implemented!")

    async def StreamBoom(self, request: Req, context: Any) -> AsyncIterator[Resp]:
        yield OK
        raise ValueError("stream broke")

    async def WriteBoom(self, request: Req, context: Any) -> None:
        await context.write(OK)
        raise KeyError("write broke")

    async def ClientStream(self, requests: AsyncIterator[Req], context: Any) -> Resp:
        async for _ in requests:
            pass
        return OK

    async def BidiStream(self, requests: AsyncIterator[Req], context: Any) -> AsyncIterator[Resp]:
        async for _ in requests:
            yield OK


def _handlers(svc: Broken) -> grpc.GenericRpcHandler[Any, Any]:
    kw: dict[str, Any] = {
        "request_deserializer": Req.FromString,
        "response_serializer": Resp.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        "t.Svc",
        {
            "Good": grpc.unary_unary_rpc_method_handler(svc.Good, **kw),
            "Boom": grpc.unary_unary_rpc_method_handler(svc.Boom, **kw),
            "Unimplemented": grpc.unary_unary_rpc_method_handler(svc.Unimplemented, **kw),
            "StreamBoom": grpc.unary_stream_rpc_method_handler(svc.StreamBoom, **kw),
            "WriteBoom": grpc.unary_stream_rpc_method_handler(svc.WriteBoom, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(svc.ClientStream, **kw),
            "BidiStream": grpc.stream_stream_rpc_method_handler(svc.BidiStream, **kw),
        },
    )


async def _serve(
    policy: EdgePolicy | None = None,
) -> tuple[grpc.aio.Server, grpc.aio.Channel, Broken]:
    svc = Broken()
    server = grpc.aio.server(
        interceptors=[MalformedRequestInterceptor(policy, {"t.Svc": Scope.KEYED})]
    )
    server.add_generic_rpc_handlers((_handlers(svc),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), svc


async def _status(call: Any) -> grpc.StatusCode:
    try:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


RAW = {"request_serializer": None, "response_deserializer": None}
GOOD = Req(service="x").SerializeToString()
BAD = b"\xff\xff\xff"


@pytest.mark.parametrize(
    ("kind", "method", "payload", "code"),
    [
        ("unary_unary", "Boom", GOOD, grpc.StatusCode.INTERNAL),
        ("unary_unary", "Unimplemented", GOOD, grpc.StatusCode.UNIMPLEMENTED),
        ("unary_unary", "Good", BAD, grpc.StatusCode.INVALID_ARGUMENT),
        ("unary_stream", "StreamBoom", GOOD, grpc.StatusCode.INTERNAL),
        ("unary_stream", "WriteBoom", GOOD, grpc.StatusCode.INTERNAL),
        ("unary_stream", "StreamBoom", BAD, grpc.StatusCode.INVALID_ARGUMENT),
        ("stream_unary", "ClientStream", BAD, grpc.StatusCode.INVALID_ARGUMENT),
        ("stream_stream", "BidiStream", BAD, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_each_failure_is_a_status_and_one_line(
    kind: str, method: str, payload: bytes, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    server, channel, _svc = await _serve()
    try:
        caplog.set_level(logging.INFO)
        call = getattr(channel, kind)(f"/t.Svc/{method}", **RAW)
        for _ in range(5):
            arg = iter([payload]) if kind.startswith("stream") else payload
            assert await _status(call(arg, timeout=5.0)) == code
    finally:
        await channel.close(None)
        await server.stop(None)
    lines = [r for r in caplog.records if r.name.startswith(("grpc", "streamrec"))]
    assert len(lines) == 5, [r.getMessage() for r in lines]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    assert all(method in r.getMessage() for r in lines)


async def test_good_calls_pass_untouched(caplog: pytest.LogCaptureFixture) -> None:
    server, channel, svc = await _serve()
    try:
        caplog.set_level(logging.INFO)
        for kind, method in [
            ("unary_unary", "Good"),
            ("stream_unary", "ClientStream"),
            ("stream_stream", "BidiStream"),
        ]:
            call = getattr(channel, kind)(f"/t.Svc/{method}", **RAW)
            arg = iter([GOOD, GOOD]) if kind.startswith("stream") else GOOD
            assert await _status(call(arg, timeout=5.0)) == grpc.StatusCode.OK
    finally:
        await channel.close(None)
        await server.stop(None)
    assert svc.calls == 1
    assert not [r for r in caplog.records if r.name.startswith(("grpc", "streamrec"))]


async def test_refusals_are_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    policy = EdgePolicy.from_settings(
        load_settings(serving_rate_limit_per_s=0.01, serving_rate_limit_burst=2)
    )
    before = metrics.REFUSED.labels("Good", "rate_limited")._value.get()
    server, channel, svc = await _serve(policy)
    try:
        caplog.set_level(logging.INFO)
        call = channel.unary_unary("/t.Svc/Good", **RAW)
        codes = [await _status(call(GOOD, timeout=5.0)) for _ in range(4)]
    finally:
        await channel.close(None)
        await server.stop(None)
    assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert svc.calls == 2
    assert metrics.REFUSED.labels("Good", "rate_limited")._value.get() - before == 2
    assert policy.in_flight.current == 0
    assert not [r for r in caplog.records if r.name.startswith("streamrec")]
