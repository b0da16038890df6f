"""Admin RPCs of the versioned serving config: history, diff, rollback, run-time settings and
the experiment lifecycle.

A mixin of :class:`serving.admin_servicer.AdminServicer` (which supplies ``store``,
``recommender``, ``_authorise`` and ``_fail``). Every change goes through
:meth:`serving.admin_store.AdminStore.commit` (one new version, audited with the principal);
servers apply it on their next refresh (``serving_refresh_s`` ≤ 1 s, so within 2 s).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

from core.errors import UnavailableError
from schemas import recommender_pb2 as pb
from schemas.admin import (
    CONFIG_KINDS,
    Change,
    ConfigVersion,
    ExperimentRecord,
    ExperimentStatus,
    Role,
    Snapshot,
)
from schemas.rules import AuditAction
from serving.admin_store import AdminStore, NoChange, experiment_records
from serving.config_versions import (
    RUNTIME_SETTINGS,
    diff,
    parse_kind,
    restore,
    validate_overrides,
)
from serving.experiments import (
    ExperimentPlan,
    LifecycleError,
    UnknownExperiment,
    create_experiment,
    experiment_record,
    move_experiment,
    parse_experiment,
    promotion_refusal,
)

if TYPE_CHECKING:
    from serving.auth import Principal
    from serving.recommender import Recommender

Ctx = grpc.aio.ServicerContext[Any, Any]
DEFAULT_VERSIONS = 50
MAX_VERSIONS = 1000
MAX_REASON = 500


def _rfc3339(ts: float | None) -> str:
    if ts is None or ts <= 0:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def change_to_proto(change: Change) -> pb.ConfigChange:
    return pb.ConfigChange(path=change.path, old_json=change.old or "", new_json=change.new or "")


def version_to_proto(version: ConfigVersion) -> pb.ConfigVersionInfo:
    return pb.ConfigVersionInfo(
        version=version.version,
        ts=_rfc3339(version.ts),
        author=version.author,
        reason=version.reason,
        action=version.action,
        kinds=list(version.kinds),
        target=version.target,
        diff=[change_to_proto(c) for c in version.diff],
    )


def experiment_to_proto(record: ExperimentRecord, version: int = 0) -> pb.ExperimentInfo:
    return pb.ExperimentInfo(
        name=record.config.name,
        status=record.status,
        config_json=record.config.model_dump_json(),
        created_by=record.created_by,
        created_at=_rfc3339(record.created_at),
        updated_at=_rfc3339(record.updated_at),
        promoted_variant=record.promoted_variant or "",
        decision=record.decision,
        version=version,
        control=record.control,
        started_at=_rfc3339(record.started_at),
    )


class AdminVersionsMixin:
    """History, diff, rollback, run-time config and experiment lifecycle RPCs."""

    store: AdminStore
    recommender: Recommender

    if TYPE_CHECKING:

        async def _authorise(self, context: Ctx, role: Role) -> Principal: ...

        async def _fail(self, context: Ctx, code: grpc.StatusCode, message: str) -> NoReturn: ...

    async def _reason(self, context: Ctx, reason: str, *, required: bool) -> str:
        text = " ".join(reason.split())
        if required and not text:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "reason is required")
        if len(text) > MAX_REASON:
            await self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reason is at most {MAX_REASON} characters, got {len(text)}",
            )
        return text

    async def _commit(
        self,
        context: Ctx,
        *,
        author: str,
        reason: str,
        action: AuditAction,
        target: str,
        change: Callable[[Snapshot], Snapshot],
        detail: Callable[[Snapshot, Snapshot], str] | None = None,
    ) -> ConfigVersion:
        """One new version; errors mapped to status codes (one log line each)."""
        try:
            return await self.store.commit(
                author=author,
                reason=reason,
                action=action,
                target=target,
                change=change,
                detail=detail,
            )
        except (NoChange, LifecycleError) as exc:
            await self._fail(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except UnknownExperiment as exc:
            await self._fail(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except ValueError as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))

    async def _kind(self, context: Ctx, text: str) -> Any:
        try:
            return parse_kind(text)
        except ValueError as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _version(self, context: Ctx, number: int) -> ConfigVersion:
        if number < 1:
            await self._fail(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"version must be ≥ 1, got {number}"
            )
        try:
            found = await self.store.version(number)
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if found is None:
            await self._fail(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no version {number} (see `streamrec admin history`)",
            )
        return found

    # --- history, diff, rollback ------------------------------------------------------------
    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: Ctx
    ) -> pb.ListVersionsResponse:
        await self._authorise(context, Role.VIEWER)
        kind = await self._kind(context, request.kind)
        limit = request.limit or DEFAULT_VERSIONS
        if not 1 <= limit <= MAX_VERSIONS:
            await self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"limit must be 1..{MAX_VERSIONS}, got {limit}",
            )
        try:
            current, versions = await self.store.versions(limit, kind)
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.ListVersionsResponse(
            versions=[version_to_proto(v) for v in versions], current=current
        )

    async def DiffVersions(
        self, request: pb.DiffVersionsRequest, context: Ctx
    ) -> pb.DiffVersionsResponse:
        await self._authorise(context, Role.VIEWER)
        kind = await self._kind(context, request.kind)
        old = await self._version(context, request.from_version)
        new = await self._version(context, request.to_version)
        changes = diff(old.state, new.state, (kind,) if kind else CONFIG_KINDS)
        return pb.DiffVersionsResponse(changes=[change_to_proto(c) for c in changes])

    async def Rollback(self, request: pb.RollbackRequest, context: Ctx) -> pb.ConfigVersionInfo:
        who = (await self._authorise(context, Role.ADMIN)).name
        reason = await self._reason(context, request.reason, required=True)
        kind = await self._kind(context, request.kind)
        target = await self._version(context, request.version)
        version = await self._commit(
            context,
            author=who,
            reason=reason,
            action="rollback",
            target=f"v{target.version}" + (f" {kind}" if kind else ""),
            change=lambda current: restore(current, target.state, kind),
        )
        return version_to_proto(version)

    # --- run-time settings ------------------------------------------------------------------
    async def GetConfig(self, request: pb.GetConfigRequest, context: Ctx) -> pb.ConfigResponse:
        await self._authorise(context, Role.VIEWER)
        try:
            current, snapshot = await self.store.snapshot()
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        shared = self.recommender.shared
        return pb.ConfigResponse(
            overrides_json=json.dumps(snapshot.config, sort_keys=True),
            effective_json=shared.base_config.model_dump_json(),
            version=current,
            runtime_settings=list(RUNTIME_SETTINGS),
        )

    async def SetConfig(self, request: pb.SetConfigRequest, context: Ctx) -> pb.ConfigVersionInfo:
        who = (await self._authorise(context, Role.ADMIN)).name
        reason = await self._reason(context, request.reason, required=True)
        if not request.values_json and not request.unset:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "nothing to set or unset")
        values: dict[str, Any] = {}
        for name, raw in request.values_json.items():
            try:
                values[name] = json.loads(raw)
            except ValueError:
                await self._fail(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{name}: value is not JSON: {raw[:80]!r}",
                )
        both = sorted(set(values) & set(request.unset))
        if both:
            await self._fail(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"both set and unset: {', '.join(both)}"
            )
        unknown = sorted(set(request.unset) - set(RUNTIME_SETTINGS))
        if unknown:
            await self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"not a run-time setting: {', '.join(unknown)}",
            )
        try:
            checked = validate_overrides(values)
        except ValueError as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        def change(current: Snapshot) -> Snapshot:
            config = {k: v for k, v in current.config.items() if k not in request.unset}
            return current.model_copy(update={"config": {**config, **checked}})

        version = await self._commit(
            context,
            author=who,
            reason=reason,
            action="set_config",
            target=",".join(sorted({*checked, *request.unset})),
            change=change,
        )
        return version_to_proto(version)

    # --- experiment lifecycle ---------------------------------------------------------------
    async def ListExperiments(
        self, request: pb.ListExperimentsRequest, context: Ctx
    ) -> pb.ListExperimentsResponse:
        await self._authorise(context, Role.VIEWER)
        try:
            _, snapshot = await self.store.snapshot()
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        records = sorted(experiment_records(snapshot).values(), key=lambda r: r.created_at)
        return pb.ListExperimentsResponse(experiments=[experiment_to_proto(r) for r in records])

    async def CreateExperiment(
        self, request: pb.CreateExperimentRequest, context: Ctx
    ) -> pb.ExperimentInfo:
        who = (await self._authorise(context, Role.ADMIN)).name
        reason = await self._reason(context, request.reason, required=False)
        shared = self.recommender.shared
        try:
            config = parse_experiment(request.config_json)
            ExperimentPlan.build(
                config, base=shared.base_config, algo_version=shared.algo_version, source="redis"
            )
        except ValueError as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        version = await self._commit(
            context,
            author=who,
            reason=reason,
            action="create_experiment",
            target=config.name,
            change=lambda s: create_experiment(s, config, by=who, now=time.time()),
            detail=lambda _old, _new: config.model_dump_json(),
        )
        return experiment_to_proto(experiment_record(version.state, config.name), version.version)

    async def _move(
        self,
        context: Ctx,
        request: pb.ChangeExperimentRequest,
        to: ExperimentStatus,
        action: AuditAction,
        role: Role,
    ) -> pb.ExperimentInfo:
        who = (await self._authorise(context, role)).name
        reason = await self._reason(context, request.reason, required=False)
        if not request.name:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        version = await self._commit(
            context,
            author=who,
            reason=reason,
            action=action,
            target=request.name,
            change=lambda s: move_experiment(s, request.name, to, now=time.time()),
            detail=lambda _old, _new: json.dumps({"status": to, "reason": reason}),
        )
        return experiment_to_proto(experiment_record(version.state, request.name), version.version)

    async def StartExperiment(
        self, request: pb.ChangeExperimentRequest, context: Ctx
    ) -> pb.ExperimentInfo:
        return await self._move(context, request, "running", "start_experiment", Role.ADMIN)

    async def PauseExperiment(
        self, request: pb.ChangeExperimentRequest, context: Ctx
    ) -> pb.ExperimentInfo:
        return await self._move(context, request, "paused", "pause_experiment", Role.OPERATOR)

    async def ResumeExperiment(
        self, request: pb.ChangeExperimentRequest, context: Ctx
    ) -> pb.ExperimentInfo:
        return await self._move(context, request, "running", "resume_experiment", Role.ADMIN)

    async def StopExperiment(
        self, request: pb.ChangeExperimentRequest, context: Ctx
    ) -> pb.ExperimentInfo:
        return await self._move(context, request, "stopped", "stop_experiment", Role.ADMIN)

    async def PromoteExperiment(
        self, request: pb.PromoteExperimentRequest, context: Ctx
    ) -> pb.ExperimentInfo:
        who = (await self._authorise(context, Role.ADMIN)).name
        reason = await self._reason(context, request.reason, required=request.force)
        if not request.name:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        decision = request.decision
        if decision not in ("", "ship", "hold", "rollback"):
            await self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"decision must be ship, hold or rollback, got {decision!r}",
            )
        users = dict(request.users_per_arm)
        variant = request.variant or request.winner
        evidence = json.dumps(
            {
                "decision": decision,
                "winner": request.winner,
                "users_per_arm": users,
                "forced": request.force,
                "reason": reason,
                "report": request.report_json[:2000],
            },
            sort_keys=True,
        )

        def change(current: Snapshot) -> Snapshot:
            record = experiment_record(current, request.name)
            refusal = promotion_refusal(record, decision=decision, users_per_arm=users)
            if refusal is not None and not request.force:
                raise LifecycleError(f"not promoting {request.name!r}: {refusal}")
            if not variant:
                raise ValueError("variant is required (the analysis named no winner)")
            summary = (
                f"forced: {reason}" + (f" (eval ab: {refusal})" if refusal else "")
                if request.force
                else f"eval ab: ship {variant}"
            )
            return move_experiment(
                current,
                request.name,
                "promoted",
                now=time.time(),
                variant=variant,
                decision=summary,
            )

        version = await self._commit(
            context,
            author=who,
            reason=reason,
            action="promote_experiment",
            target=request.name,
            change=change,
            detail=lambda _old, _new: evidence,
        )
        return experiment_to_proto(experiment_record(version.state, request.name), version.version)
