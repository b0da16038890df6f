"""gRPC adapter of the Admin service: rules, dry runs, experiments, principals, audit.

Every call needs metadata ``authorization: Bearer <token>`` naming a principal (see
:mod:`serving.auth`; else UNAUTHENTICATED) whose role allows the call (else
PERMISSION_DENIED): viewer reads, operator also switches the kill switch and pauses
experiments, admin also changes rules, experiments, config and principals. The audit trail
records the authenticated principal's name (an ``x-streamrec-user`` header is ignored).
Rule and experiment changes are stored in Redis and audited atomically; every server picks
them up on its next refresh (≤ ~1 s). Redis down → UNAVAILABLE.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NoReturn

import grpc
from pydantic import SecretStr

from core.errors import UnavailableError
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.admin import BOOTSTRAP_PRINCIPAL, PrincipalRecord, Role, Snapshot
from schemas.rules import Rule
from serving.admin_controls import AdminControlsMixin
from serving.admin_store import AdminStore, rules_of
from serving.admin_versions import AdminVersionsMixin
from serving.auth import Authenticator, AuthError, Principal, PrincipalStore, bearer_token
from serving.convert import (
    InvalidRequest,
    audit_to_proto,
    parse_recommend,
    rule_from_proto,
    rule_to_proto,
    to_response,
)
from serving.experiments import ExperimentPlan, parse_experiment, set_running
from serving.recommender import Recommender
from serving.servicer import deadline_of

log = logging.getLogger("streamrec.serving.admin")

Ctx = grpc.aio.ServicerContext[Any, Any]
MAX_AUDIT = 1000
DEFAULT_AUDIT = 100
_AUTH_CODES = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
}


def _rfc3339(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def principal_to_proto(record: PrincipalRecord) -> pb.PrincipalInfo:
    return pb.PrincipalInfo(
        name=record.name,
        role=record.role,
        created_by=record.created_by,
        created_at=_rfc3339(record.created_at),
        revoked_at=_rfc3339(record.revoked_at),
        revoked_by=record.revoked_by or "",
    )


class UnknownRule(LookupError):
    """DeleteRule of an id that is not stored (NOT_FOUND)."""


class AdminServicer(AdminControlsMixin, AdminVersionsMixin, pb_grpc.AdminServicer):
    """Admin RPCs over an :class:`AdminStore` and the server's :class:`Recommender`."""

    def __init__(self, store: AdminStore, recommender: Recommender, token: SecretStr) -> None:
        self.store = store
        self.recommender = recommender
        self.principals = PrincipalStore(store)
        self.auth = Authenticator(self.principals, token)

    async def _fail(self, context: Ctx, code: grpc.StatusCode, message: str) -> NoReturn:
        """Abort the call with ``code`` and one log line (no traceback)."""
        log.info("admin call refused: %s: %s", code.name, message)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

    async def _authorise(self, context: Ctx, role: Role) -> Principal:
        """The authenticated caller, if its role is at least ``role`` (else the call aborts:
        UNAUTHENTICATED for a missing, unknown or revoked token, PERMISSION_DENIED for a too
        low role, UNAVAILABLE when Redis cannot be asked)."""
        what = sys._getframe(1).f_code.co_name  # the RPC method calling (for messages)
        metadata = dict(context.invocation_metadata() or ())
        try:
            principal = await self.auth.authenticate(bearer_token(metadata.get("authorization")))
            self.auth.authorise(principal, role, what)
        except AuthError as exc:
            await self._fail(context, _AUTH_CODES[exc.kind], str(exc))
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return principal

    async def CreateRule(self, request: pb.CreateRuleRequest, context: Ctx) -> pb.Rule:
        who = (await self._authorise(context, Role.ADMIN)).name
        reason = await self._reason(context, request.reason, required=False)
        if request.rule.id:
            await self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "rule ids are assigned by the server: leave rule.id empty",
            )
        try:
            rule = rule_from_proto(
                request.rule,
                rule_id=f"r-{uuid.uuid4().hex[:12]}",
                created_by=who,
                created_at=time.time(),
            )
        except InvalidRequest as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        def add(current: Snapshot) -> Snapshot:
            rules = {**current.rules, rule.id: rule.model_dump(mode="json")}
            return current.model_copy(update={"rules": rules})

        await self._commit(
            context,
            author=who,
            reason=reason,
            action="create_rule",
            target=rule.id,
            change=add,
            detail=lambda _old, _new: rule.model_dump_json(),
        )
        return rule_to_proto(rule)

    async def ListRules(self, request: pb.ListRulesRequest, context: Ctx) -> pb.ListRulesResponse:
        await self._authorise(context, Role.VIEWER)
        try:
            rules = await self.store.list_rules()
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        now = time.time()
        kept = [
            r
            for r in rules
            if (not request.tenant or not r.tenant or r.tenant == request.tenant)
            and (not request.surface or not r.surface or r.surface == request.surface)
            and (request.include_expired or not r.expired_at(now))
        ]
        return pb.ListRulesResponse(rules=[rule_to_proto(r) for r in kept])

    async def DeleteRule(
        self, request: pb.DeleteRuleRequest, context: Ctx
    ) -> pb.DeleteRuleResponse:
        who = (await self._authorise(context, Role.ADMIN)).name
        reason = await self._reason(context, request.reason, required=False)
        if not request.id:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "id is required")
        deleted: list[Rule] = []

        def remove(current: Snapshot) -> Snapshot:
            if request.id not in current.rules:
                raise UnknownRule(f"no rule {request.id!r}")
            deleted[:] = [r for r in rules_of(current) if r.id == request.id]
            rules = {i: r for i, r in current.rules.items() if i != request.id}
            return current.model_copy(update={"rules": rules})

        try:
            await self.store.commit(
                author=who,
                reason=reason,
                action="delete_rule",
                target=request.id,
                change=remove,
                detail=lambda _old, _new: deleted[0].model_dump_json(),
            )
        except UnknownRule as exc:
            await self._fail(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.DeleteRuleResponse(deleted=rule_to_proto(deleted[0]))

    async def DryRunRule(
        self, request: pb.DryRunRuleRequest, context: Ctx
    ) -> pb.DryRunRuleResponse:
        who = (await self._authorise(context, Role.VIEWER)).name
        try:
            rule = rule_from_proto(
                request.rule, rule_id="dry-run", created_by=who, created_at=time.time()
            )
            query = parse_recommend(request.request)
        except InvalidRequest as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        responses = []
        for extra in ((), (rule,)):
            rec = await self.recommender.recommend(
                user_id=query.user_id,
                session_id=query.session_id,
                k=query.k,
                context=query.context,
                exclude=query.exclude,
                anchors=query.anchors,
                deadline=deadline_of(context),
                extra_rules=extra,
            )
            responses.append(to_response(rec))
        return pb.DryRunRuleResponse(without_rule=responses[0], with_rule=responses[1])

    async def GetAudit(self, request: pb.GetAuditRequest, context: Ctx) -> pb.GetAuditResponse:
        await self._authorise(context, Role.VIEWER)
        limit = request.limit or DEFAULT_AUDIT
        if not 1 <= limit <= MAX_AUDIT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"limit must be 1..{MAX_AUDIT}, got {limit}"
            )
        try:
            entries = await self.store.audit(limit)
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.GetAuditResponse(entries=[audit_to_proto(e) for e in entries])

    async def SetExperiment(
        self, request: pb.SetExperimentRequest, context: Ctx
    ) -> pb.ExperimentResponse:
        """Run this config now (created or replaced; any other live experiment stops)."""
        who = (await self._authorise(context, Role.ADMIN)).name
        shared = self.recommender.shared
        try:
            experiment = parse_experiment(request.config_json)
            ExperimentPlan.build(
                experiment,
                base=shared.base_config,
                algo_version=shared.algo_version,
                source="redis",
            )
        except ValueError as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await self._commit(
            context,
            author=who,
            reason="",
            action="set_experiment",
            target=experiment.name,
            change=lambda s: set_running(s, experiment, by=who, now=time.time()),
            detail=lambda _old, _new: experiment.model_dump_json(),
        )
        return pb.ExperimentResponse(config_json=experiment.model_dump_json(), source="redis")

    async def GetExperiment(
        self, request: pb.GetExperimentRequest, context: Ctx
    ) -> pb.ExperimentResponse:
        await self._authorise(context, Role.VIEWER)
        plan = self.recommender.shared.plan
        return pb.ExperimentResponse(
            config_json=plan.experiment.model_dump_json(), source=plan.source
        )

    # --- principals ----------------------------------------------------------------------------
    async def WhoAmI(self, request: pb.WhoAmIRequest, context: Ctx) -> pb.PrincipalInfo:
        principal = await self._authorise(context, Role.VIEWER)
        if principal.name == BOOTSTRAP_PRINCIPAL:
            return pb.PrincipalInfo(name=principal.name, role=principal.role.label)
        try:
            record = await self.principals.get(principal.name)
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if record is None:
            return pb.PrincipalInfo(name=principal.name, role=principal.role.label)
        return principal_to_proto(record)

    async def AddPrincipal(
        self, request: pb.AddPrincipalRequest, context: Ctx
    ) -> pb.AddPrincipalResponse:
        who = (await self._authorise(context, Role.ADMIN)).name
        try:
            role = Role.parse(request.role)
            added = await self.principals.add(request.name, role, who)
        except ValueError as exc:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if added is None:
            await self._fail(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"principal {request.name!r} exists (revoke it first to issue a new token)",
            )
        record, token = added
        return pb.AddPrincipalResponse(principal=principal_to_proto(record), token=token)

    async def ListPrincipals(
        self, request: pb.ListPrincipalsRequest, context: Ctx
    ) -> pb.ListPrincipalsResponse:
        await self._authorise(context, Role.ADMIN)
        try:
            records = await self.principals.list()
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.ListPrincipalsResponse(principals=[principal_to_proto(r) for r in records])

    async def RevokePrincipal(
        self, request: pb.RevokePrincipalRequest, context: Ctx
    ) -> pb.PrincipalInfo:
        who = (await self._authorise(context, Role.ADMIN)).name
        if request.name == BOOTSTRAP_PRINCIPAL:
            await self._fail(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{BOOTSTRAP_PRINCIPAL!r} is STREAMREC_ADMIN_TOKEN: change the setting instead",
            )
        if not request.name:
            await self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        try:
            record = await self.principals.revoke(request.name, who)
        except UnavailableError as exc:
            await self._fail(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        if record is None:
            await self._fail(context, grpc.StatusCode.NOT_FOUND, f"no principal {request.name!r}")
        return principal_to_proto(record)
