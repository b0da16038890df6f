"""Server interceptor that counts every unary answer by service, method, status code and surface.

:class:`AnswerStatusInterceptor` is the outermost interceptor of the server, so it sees the
status of each call whatever set it: the servicer's ``context.abort`` (INVALID_ARGUMENT,
UNAVAILABLE for an empty answer …), a request guard's abort (a malformed payload, a missing
API key, a rate limit), an exception a handler let escape (grpc answers UNKNOWN) or a handler
that set a code and returned. Each answer increments ``streamrec_grpc_answers_total`` once.

Recommender calls carry the request's surface, bounded by :class:`serving.metrics.SurfaceLabels`
(``other`` for surfaces outside ``slo_surfaces`` and for an undecodable request); other
services get an empty surface. A method the server does not have is counted under
``service``/``method`` ``other`` with UNIMPLEMENTED (a client cannot grow the label set).
Streaming methods (health Watch, reflection) are not counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from schemas.metrics import RECOMMENDER_SERVICE, SURFACE_OTHER
from serving import metrics
from serving.metrics import SurfaceLabels

__all__ = ["AnswerStatusInterceptor", "split_method"]

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Counted: TypeAlias = "Callable[[str, str], None]"

if TYPE_CHECKING:  # generic in the type stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


def split_method(full: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``); anything else → (other, other)."""
    parts = full.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return SURFACE_OTHER, SURFACE_OTHER
    return parts[1], parts[2]


#: status code → its name (``StatusCode.name`` is a slow enum property on the hot path)
_NAMES: dict[grpc.StatusCode, str] = {code: code.name for code in grpc.StatusCode}
_OK, _UNKNOWN, _CANCELLED = (_NAMES[c] for c in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN,
                                                  grpc.StatusCode.CANCELLED))  # fmt: skip


def _final_code(context: grpc.aio.ServicerContext[Any, Any], default: str) -> str:
    """Name of the code the call ends with: the one set (abort, set_code) or ``default``."""
    code = context.code()
    return default if code is None else _NAMES.get(code, _UNKNOWN)


class _Counter:
    """Counter children of one method, created on first use (codes × surfaces is bounded)."""

    __slots__ = ("_children", "method", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service, self.method = service, method
        self._children: dict[tuple[str, str], Any] = {}

    def __call__(self, code: str, surface: str) -> None:
        child = self._children.get((code, surface))
        if child is None:
            child = metrics.GRPC_ANSWERS.labels(self.service, self.method, code, surface)
            self._children[code, surface] = child
        child.inc()


def _surface_of(request: Any, labels: SurfaceLabels) -> str:
    """The bounded surface label of a Recommender request (``other`` when it has no context)."""
    context = getattr(request, "context", None)
    surface = getattr(context, "surface", None)
    if not isinstance(surface, str):
        return SURFACE_OTHER
    return labels(surface)


def _counting(handler: Handler, count: _Counter, surface: Callable[[Any], str]) -> Handler:
    behavior: Any = handler.unary_unary
    assert behavior is not None

    async def counted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            response = await behavior(request, context)
        except asyncio.CancelledError:
            count(_CANCELLED, surface(request))
            raise
        except grpc.aio.AbortError:
            count(_final_code(context, _UNKNOWN), surface(request))
            raise
        except Exception:
            # grpc answers UNKNOWN for an exception a handler let escape (and logs it)
            count(_UNKNOWN, surface(request))
            raise
        count(_final_code(context, _OK), surface(request))
        return response

    return grpc.unary_unary_rpc_method_handler(
        counted,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AnswerStatusInterceptor(_Interceptor):
    """Wraps every unary-unary handler once (cached per registered method) with a counter.

    Register it first in ``grpc.aio.server(interceptors=[...])``: interceptors listed after it
    (request guards) run inside it, so their rejections are counted too.
    """

    def __init__(self, surfaces: SurfaceLabels) -> None:
        self._surfaces = surfaces
        self._wrapped: dict[str, Handler] = {}
        self._unimplemented = _Counter(SURFACE_OTHER, SURFACE_OTHER)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED (the stubs omit None)
            self._unimplemented(grpc.StatusCode.UNIMPLEMENTED.name, "")
            return handler  # type: ignore[return-value]
        if handler.unary_unary is None:
            return handler
        service, name = split_method(method)
        if service == RECOMMENDER_SERVICE:
            labels = self._surfaces

            def surface(request: Any) -> str:
                return _surface_of(request, labels)
        else:

            def surface(request: Any) -> str:
                return ""

        wrapped = _counting(handler, _Counter(service, name), surface)
        self._wrapped[method] = wrapped
        return wrapped
