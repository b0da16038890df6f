"""Admin RPCs of the operational controls: kill switch, decision traces, erasure.

A mixin of :class:`serving.admin_servicer.AdminServicer` (which supplies ``_authorise``,
``store`` and ``recommender``). Roles: ``SetKillSwitch`` needs operator, ``GetKillSwitch`` and
``Explain`` viewer, ``Forget`` admin. Bad input → INVALID_ARGUMENT, unknown request / scope →
NOT_FOUND, Redis down → UNAVAILABLE; each with a one-line message and one log line.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from core.errors import UnavailableError
from schemas import recommender_pb2 as pb
from schemas.admin import Role
from schemas.controls import DecisionTrace, KillSwitch
from schemas.events import MAX_STR_LEN
from serving.controls_store import ControlsStore, scope_label
from serving.convert import InvalidRequest, reject_unknown_fields

if TYPE_CHECKING:
    from serving.admin_store import AdminStore
    from serving.auth import Principal
    from serving.recommender import Recommender

log = logging.getLogger("streamrec.serving.admin")
Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_ID = 128


def _iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def text_arg(value: str, what: str, *, required: bool, limit: int = MAX_STR_LEN) -> str:
    """Validate a free-text / id argument: length, no control characters, not blank if
    required. Raises :class:`InvalidRequest` with a one-line message."""
    if required and not value.strip():
        raise InvalidRequest(f"{what} is required")
    if len(value) > limit:
        raise InvalidRequest(f"{what} is longer than {limit} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise InvalidRequest(f"{what} contains control characters")
    if value and value != value.strip():
        raise InvalidRequest(f"{what} has leading or trailing whitespace")
    return value


def switch_to_proto(switch: KillSwitch) -> pb.KillSwitch:
    return pb.KillSwitch(
        tenant=switch.tenant,
        surface=switch.surface,
        reason=switch.reason,
        who=switch.who,
        since=_iso(switch.since),
    )


def trace_to_proto(trace: DecisionTrace) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        request_id=trace.request_id,
        user_id=trace.user_id,
        ts=_iso(trace.ts),
        method=trace.method,
        variant=trace.variant,
        algo_version=trace.algo_version,
        stage=trace.stage,
        tenant=trace.tenant,
        surface=trace.surface,
        locale=trace.locale,
        items=[
            pb.TracedItem(
                item_id=i.item_id, rank=i.rank, score=i.score, reasons=i.reasons, rules=i.rules
            )
            for i in trace.items
        ],
        rules=trace.rules,
        flags=trace.flags,
    )


class AdminControlsMixin:
    """SetKillSwitch / GetKillSwitch / Explain / Forget."""

    store: AdminStore
    recommender: Recommender
    _controls_store: ControlsStore | None = None

    async def _authorise(self, context: Ctx, role: Role) -> Principal:
        raise NotImplementedError  # pragma: no cover - AdminServicer's

    @property
    def controls_store(self) -> ControlsStore:
        if self._controls_store is None:
            self._controls_store = ControlsStore(
                self.store.redis, self.store.keys, timeout_s=self.store.timeout_s
            )
        return self._controls_store

    async def _refuse(self, context: Ctx, code: grpc.StatusCode, message: str) -> NoReturn:
        log.info("admin call refused: %s: %s", code.name, message)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    async def SetKillSwitch(
        self, request: pb.SetKillSwitchRequest, context: Ctx
    ) -> pb.KillSwitchResponse:
        who = (await self._authorise(context, Role.OPERATOR)).name
        try:
            reject_unknown_fields(request)
            tenant = text_arg(request.tenant, "tenant", required=False)
            surface = text_arg(request.surface, "surface", required=False)
            reason = text_arg(request.reason, "reason", required=True)
        except InvalidRequest as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        store = self.controls_store
        try:
            if request.on:
                await store.switch_on(tenant, surface, reason, who)
            elif not await store.switch_off(tenant, surface, reason, who):
                await self._refuse(
                    context,
                    grpc.StatusCode.NOT_FOUND,
                    f"no kill switch is on for {scope_label(tenant, surface)}",
                )
            active = await store.kill_switches()
        except UnavailableError as exc:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        self.recommender.controls.apply(active)  # this server at once; the others on their poll
        log.warning(
            "kill switch %s for %s by %s: %s",
            "on" if request.on else "off",
            scope_label(tenant, surface),
            who,
            reason,
        )
        return pb.KillSwitchResponse(active=[switch_to_proto(s) for s in active])

    async def GetKillSwitch(
        self, request: pb.GetKillSwitchRequest, context: Ctx
    ) -> pb.KillSwitchResponse:
        await self._authorise(context, Role.VIEWER)
        try:
            active = await self.controls_store.kill_switches()
        except UnavailableError as exc:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.KillSwitchResponse(active=[switch_to_proto(s) for s in active])

    async def Explain(self, request: pb.ExplainRequest, context: Ctx) -> pb.ExplainResponse:
        await self._authorise(context, Role.VIEWER)
        try:
            reject_unknown_fields(request)
            request_id = text_arg(request.request_id, "request_id", required=True, limit=MAX_ID)
        except InvalidRequest as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            trace = await self.controls_store.trace(request_id)
        except UnavailableError as exc:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if trace is None:
            await self._refuse(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no trace of request {request_id!r} (unknown, or past the trace retention)",
            )
        return trace_to_proto(trace)

    async def Forget(self, request: pb.ForgetRequest, context: Ctx) -> pb.ForgetResponse:
        who = (await self._authorise(context, Role.ADMIN)).name
        try:
            reject_unknown_fields(request)
            user_id = text_arg(request.user_id, "user_id", required=True, limit=MAX_ID)
        except InvalidRequest as exc:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            deleted, removed = await self.controls_store.forget(user_id, who)
        except UnavailableError as exc:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        log.warning("forgot a user (%d keys, %d index entries) for %s", deleted, removed, who)
        return pb.ForgetResponse(keys_deleted=deleted, entries_removed=removed)
