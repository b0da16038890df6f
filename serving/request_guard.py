"""Server interceptor: every call answered with a status and at most one log line, edge admission.

grpc.aio's default for a request payload that does not parse, or for a servicer method that
raises, is status UNKNOWN plus an ERROR log record with a traceback, per call (20 calls of the
unimplemented ``Health/List`` wrote 240 lines): a broken or hostile client can flood the server
log. :class:`MalformedRequestInterceptor` wraps the handler of every method — unary and
streaming alike (health ``Watch``, reflection), built once per method:

* payloads are decoded leniently; a :class:`~google.protobuf.message.DecodeError` becomes
  INVALID_ARGUMENT ("malformed request: …") and one INFO line;
* an exception escaping the servicer becomes UNIMPLEMENTED (``NotImplementedError``) or
  INTERNAL ("internal error; see the server log") and one WARNING line, no traceback;
* with an :class:`~serving.edge.EdgePolicy`, unary calls pass its admission first: a refusal
  is UNAUTHENTICATED or RESOURCE_EXHAUSTED with its message, counted in
  ``streamrec_serving_refused_total`` and logged at DEBUG only (the metric is the signal; a
  flood of refusals must not flood the log).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from serving import metrics
from serving.edge import EdgePolicy, RefusalReason, Scope

__all__ = ["MalformedRequestInterceptor"]

log = logging.getLogger("streamrec.serving")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

if TYPE_CHECKING:  # generic in the type stubs only
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor

REFUSAL_STATUS = {
    RefusalReason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RefusalReason.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
INTERNAL_MESSAGE = "internal error; see the server log"


class _Malformed:
    """Stands in for a request whose bytes did not decode."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return _Malformed(" ".join(str(exc).split())[:200])

    return decode


async def _reject_malformed(context: Context, method: str, request: _Malformed) -> None:
    log.info("%s: malformed request rejected: %s", method, request.error)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.error}")


async def _fail(context: Context, method: str, exc: Exception) -> None:
    """Answer an exception of the servicer with a status and one log line (no traceback)."""
    if isinstance(exc, NotImplementedError):
        log.warning("%s: not implemented", method)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented")
    detail = " ".join(str(exc).split())[:300]  # one line, whatever the message holds
    log.warning("%s failed: %s: %s", method, type(exc).__name__, detail)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


async def _checked(requests: AsyncIterator[Any], context: Context, method: str) -> Any:
    async for request in requests:
        if isinstance(request, _Malformed):
            await _reject_malformed(context, method, request)
        yield request


class _Guard:
    """Wraps one method's handler (see the module docstring)."""

    def __init__(self, method: str, scope: Scope, policy: EdgePolicy | None) -> None:
        self.method = method
        self.short = method.rpartition("/")[2]
        self.scope = scope
        self.policy = policy if policy is not None and policy.active else None

    async def _admit(self, context: Context) -> bool:
        """True when admitted (release it after); aborts the call when refused."""
        policy = self.policy
        if policy is None or self.scope is Scope.OPEN:
            return False
        refusal = policy.admit(
            self.scope, context.invocation_metadata() or (), context.peer(), time.monotonic()
        )
        if refusal is not None:
            metrics.REFUSED.labels(self.short, refusal.reason.value).inc()
            log.debug("%s refused (%s): %s", self.method, refusal.reason, refusal.message)
            await context.abort(REFUSAL_STATUS[refusal.reason], refusal.message)
        metrics.IN_FLIGHT.set(policy.in_flight.current)
        return True

    def _release(self) -> None:
        assert self.policy is not None
        self.policy.release(self.scope)
        metrics.IN_FLIGHT.set(self.policy.in_flight.current)

    def unary_unary(self, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: Context) -> Any:
            if isinstance(request, _Malformed):
                await _reject_malformed(context, self.method, request)
            admitted = await self._admit(context)
            try:
                result = behavior(request, context)
                return (await result) if inspect.isawaitable(result) else result
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - answered INTERNAL + one log line
                await _fail(context, self.method, exc)
            finally:
                if admitted:
                    self._release()

        return guarded

    def stream_unary(self, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def guarded(requests: AsyncIterator[Any], context: Context) -> Any:
            try:
                result = behavior(_checked(requests, context, self.method), context)
                return (await result) if inspect.isawaitable(result) else result
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - answered INTERNAL + one log line
                await _fail(context, self.method, exc)

        return guarded

    def streaming(self, behavior: Callable[..., Any], *, stream_in: bool) -> Callable[..., Any]:
        """Wrap a response-streaming behaviour (async generator or coroutine using write)."""
        method = self.method

        async def prepared(request: Any, context: Context) -> Any:
            if stream_in:
                return _checked(request, context, method)
            if isinstance(request, _Malformed):
                await _reject_malformed(context, method, request)
            return request

        if inspect.isasyncgenfunction(behavior):

            async def guarded_gen(request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    async for response in behavior(await prepared(request, context), context):
                        yield response
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - answered INTERNAL + one log line
                    await _fail(context, method, exc)

            return guarded_gen

        async def guarded(request: Any, context: Context) -> None:
            try:
                result = behavior(await prepared(request, context), context)
                if inspect.isawaitable(result):
                    await result
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - answered INTERNAL + one log line
                await _fail(context, method, exc)

        return guarded


def _wrap(handler: Handler, guard: _Guard) -> Handler:
    decode = _lenient(handler.request_deserializer)
    encode = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            guard.unary_unary(handler.unary_unary),
            request_deserializer=decode,
            response_serializer=encode,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            guard.streaming(handler.unary_stream, stream_in=False),
            request_deserializer=decode,
            response_serializer=encode,
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            guard.stream_unary(handler.stream_unary),
            request_deserializer=decode,
            response_serializer=encode,
        )
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(
        guard.streaming(handler.stream_stream, stream_in=True),
        request_deserializer=decode,
        response_serializer=encode,
    )


class MalformedRequestInterceptor(_Interceptor):
    """Wraps every method's handler once (cached per method); see the module docstring.

    ``scopes``: service full name → :class:`~serving.edge.Scope` (others are OPEN);
    ``policy``: the edge admission (None or inactive = no admission checks).
    """

    def __init__(
        self, policy: EdgePolicy | None = None, scopes: Mapping[str, Scope] | None = None
    ) -> None:
        self.policy = policy
        self.scopes = dict(scopes or {})
        self._wrapped: dict[str, Handler] = {}

    def scope_of(self, method: str) -> Scope:
        service = method.lstrip("/").partition("/")[0]
        return self.scopes.get(service, Scope.OPEN)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler: Handler | None = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return None  # type: ignore[return-value]
        wrapped = _wrap(handler, _Guard(method, self.scope_of(method), self.policy))
        self._wrapped[method] = wrapped
        return wrapped
