"""Server interceptor that answers an undecodable request payload with INVALID_ARGUMENT.

grpc.aio's default for bytes that do not parse as the method's request message is status
UNKNOWN plus an ERROR log line with a traceback, per call: a broken or hostile client can
flood the server log. With :class:`MalformedRequestInterceptor` the payload of a unary call is
decoded leniently; a :class:`~google.protobuf.message.DecodeError` becomes INVALID_ARGUMENT
("malformed request: …") and a debug log line. Streaming methods (health Watch, reflection)
are passed through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

__all__ = ["MalformedRequestInterceptor"]

log = logging.getLogger("streamrec.serving")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

if TYPE_CHECKING:  # generic in the type stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class _Malformed:
    """Stands in for a request whose bytes did not decode."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return _Malformed(str(exc)[:200])

    return decode


def _guard(handler: Handler) -> Handler:
    behavior: Any = handler.unary_unary  # the servicer's coroutine method
    deserializer = handler.request_deserializer
    assert behavior is not None and deserializer is not None

    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if isinstance(request, _Malformed):
            log.debug("malformed request rejected: %s", request.error)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.error}"
            )
        return await behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded,
        request_deserializer=_lenient(deserializer),
        response_serializer=handler.response_serializer,
    )


class MalformedRequestInterceptor(_Interceptor):
    """Wraps every unary-unary handler once (cached per method) with a lenient decoder."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        wrapped = _guard(handler)
        self._wrapped[method] = wrapped
        return wrapped
