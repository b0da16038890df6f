"""gRPC adapter of the Admin service: rules, dry runs, experiments and the audit trail.

Every call needs metadata ``authorization: Bearer <admin token>`` (else UNAUTHENTICATED).
The audit trail names the caller from metadata ``x-streamrec-user`` (default ``admin``, the
only token's name). Rule and experiment changes are stored in Redis and audited atomically;
every server picks them up on its next refresh (≤ ~1 s). Redis down → UNAVAILABLE.
"""

from __future__ import annotations

import hmac
import time
import uuid
from typing import Any

import grpc
from pydantic import SecretStr, ValidationError

from core.errors import UnavailableError
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.rules import Rule
from serving.admin_store import AdminStore
from serving.convert import (
    InvalidRequest,
    audit_to_proto,
    parse_recommend,
    rule_from_proto,
    rule_to_proto,
    to_response,
)
from serving.experiments import ExperimentPlan, parse_experiment
from serving.recommender import Recommender
from serving.servicer import deadline_of

Ctx = grpc.aio.ServicerContext[Any, Any]
USER_HEADER = "x-streamrec-user"
DEFAULT_WHO = "admin"
MAX_AUDIT = 1000
DEFAULT_AUDIT = 100


class AdminServicer(pb_grpc.AdminServicer):
    """Admin RPCs over an :class:`AdminStore` and the server's :class:`Recommender`."""

    def __init__(self, store: AdminStore, recommender: Recommender, token: SecretStr) -> None:
        self.store = store
        self.recommender = recommender
        self._expected = f"Bearer {token.get_secret_value()}".encode()

    async def _authorise(self, context: Ctx) -> str:
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if not hmac.compare_digest(given_bytes, self._expected):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong admin token")
        who = metadata.get(USER_HEADER, DEFAULT_WHO)
        who = who if isinstance(who, str) else who.decode(errors="replace")
        return who[:128] or DEFAULT_WHO

    async def CreateRule(self, request: pb.CreateRuleRequest, context: Ctx) -> pb.Rule:
        who = await self._authorise(context)
        try:
            rule = rule_from_proto(
                request.rule,
                rule_id=f"r-{uuid.uuid4().hex[:12]}",
                created_by=who,
                created_at=time.time(),
            )
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            created = await self.store.create_rule(rule, who)
        except UnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if not created:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"rule {rule.id!r} exists")
        return rule_to_proto(rule)

    async def ListRules(self, request: pb.ListRulesRequest, context: Ctx) -> pb.ListRulesResponse:
        await self._authorise(context)
        try:
            rules = await self.store.list_rules()
        except UnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
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
        who = await self._authorise(context)
        if not request.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id is required")
        try:
            old = await self.store.delete_rule(request.id, who)
        except UnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        if old is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no rule {request.id!r}")
        try:
            deleted = rule_to_proto(Rule.model_validate_json(old))
        except ValidationError:
            deleted = pb.Rule(id=request.id, note="stored rule was unreadable")
        return pb.DeleteRuleResponse(deleted=deleted)

    async def DryRunRule(
        self, request: pb.DryRunRuleRequest, context: Ctx
    ) -> pb.DryRunRuleResponse:
        who = await self._authorise(context)
        try:
            rule = rule_from_proto(
                request.rule, rule_id="dry-run", created_by=who, created_at=time.time()
            )
            query = parse_recommend(request.request)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
        await self._authorise(context)
        limit = request.limit or DEFAULT_AUDIT
        if not 1 <= limit <= MAX_AUDIT:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"limit must be 1..{MAX_AUDIT}, got {limit}"
            )
        try:
            entries = await self.store.audit(limit)
        except UnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.GetAuditResponse(entries=[audit_to_proto(e) for e in entries])

    async def SetExperiment(
        self, request: pb.SetExperimentRequest, context: Ctx
    ) -> pb.ExperimentResponse:
        who = await self._authorise(context)
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
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            await self.store.set_experiment(experiment, who)
        except UnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.ExperimentResponse(config_json=experiment.model_dump_json(), source="redis")

    async def GetExperiment(
        self, request: pb.GetExperimentRequest, context: Ctx
    ) -> pb.ExperimentResponse:
        await self._authorise(context)
        plan = self.recommender.shared.plan
        return pb.ExperimentResponse(
            config_json=plan.experiment.model_dump_json(), source=plan.source
        )
