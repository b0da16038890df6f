"""gRPC adapter of the Recommender service: validate, call the recommender, log, translate.

Status codes: INVALID_ARGUMENT for bad requests (see :mod:`serving.convert`); UNAVAILABLE only
when no item was ever known (first start with Redis down and no last-known list) — counted in
``streamrec_serving_empty_answers_total``. Redis trouble never fails a request: the answer
falls back and says so (``fallback_stage``, ``degraded``).

Deadline: the Redis reads get ``min(client deadline − 5 ms, request_timeout_s)``; past it the
answer comes from the in-process caches, so a request never waits on Redis beyond its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from typing import Any

import grpc

from core.settings import setting_default
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.controls import AnswerError
from schemas.events import EXPLORING_REASON, Context
from schemas.ids import Pseudonyms
from serving import metrics
from serving.convert import InvalidRequest, parse_recommend, parse_similar, to_response
from serving.exposure_log import ExposureLog, PendingExposure
from serving.ranker import Stage
from serving.recommender import Recommendation, Recommender
from serving.traces import TraceLog

log = logging.getLogger("streamrec.serving")
DEADLINE_MARGIN_S = 0.005
_LATENCY = {m: metrics.LATENCY.labels(m) for m in ("Recommend", "SimilarItems")}
_ANSWERS = {
    (m, stage): metrics.ANSWERS.labels(m, label)
    for m in ("Recommend", "SimilarItems")
    for stage, label in metrics.STAGE_LABEL.items()
}
NO_STATE = "no recommendation state available yet (Redis unreachable and no last-known list)"

RecommendContext = grpc.aio.ServicerContext[pb.RecommendRequest, pb.RecommendResponse]
SimilarContext = grpc.aio.ServicerContext[pb.SimilarItemsRequest, pb.RecommendResponse]


def deadline_of(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """Absolute event-loop time by which the answer must be ready (None = no deadline)."""
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining - DEADLINE_MARGIN_S


class RecommenderServicer(pb_grpc.RecommenderServicer):
    """Recommend and SimilarItems over a :class:`~serving.recommender.Recommender`."""

    def __init__(
        self,
        recommender: Recommender,
        exposures: ExposureLog | None,
        *,
        surfaces: metrics.SurfaceLabels | None = None,
        traces: TraceLog | None = None,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        self.recommender = recommender
        self.pseudonyms = pseudonyms  # pii_policy of user / session ids (issue 19)
        self.exposures = exposures
        self.traces = traces
        #: bounded ``surface`` label of the empty-answer counter (slo_surfaces + other)
        self.surfaces = surfaces or metrics.SurfaceLabels(setting_default("slo_surfaces"))

    async def Recommend(
        self, request: pb.RecommendRequest, context: RecommendContext
    ) -> pb.RecommendResponse:
        started = time.perf_counter()
        try:
            try:
                query = parse_recommend(request, self.pseudonyms)
            except InvalidRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            rec = await self._guarded(
                "Recommend",
                self.recommender.recommend(
                    user_id=query.user_id,
                    session_id=query.session_id,
                    k=query.k,
                    context=query.context,
                    exclude=query.exclude,
                    anchors=query.anchors,
                    deadline=deadline_of(context),
                ),
                context,
                started,
                query.user_id,
                query.session_id,
                query.context,
            )
            return await self._answer(
                "Recommend", rec, context, started, query.user_id, query.session_id, query.context
            )
        finally:
            _LATENCY["Recommend"].observe(time.perf_counter() - started)

    async def SimilarItems(
        self, request: pb.SimilarItemsRequest, context: SimilarContext
    ) -> pb.RecommendResponse:
        started = time.perf_counter()
        try:
            try:
                query = parse_similar(request, self.pseudonyms)
            except InvalidRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            rec = await self._guarded(
                "SimilarItems",
                self.recommender.similar_items(
                    item_id=query.item_id,
                    k=query.k,
                    context=query.context,
                    exclude=query.exclude,
                    user_id=query.user_id,
                    session_id=query.session_id,
                    deadline=deadline_of(context),
                ),
                context,
                started,
                query.user_id,
                query.session_id,
                query.context,
            )
            return await self._answer(
                "SimilarItems",
                rec,
                context,
                started,
                query.user_id,
                query.session_id,
                query.context,
            )
        finally:
            _LATENCY["SimilarItems"].observe(time.perf_counter() - started)

    async def _answer(
        self,
        method: str,
        rec: Recommendation,
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        user_id: str | None,
        session_id: str | None,
        ctx: Context,
    ) -> pb.RecommendResponse:
        self._log(
            PendingExposure(
                request_id=rec.request_id,
                user_id=user_id,
                session_id=session_id,
                ts=rec.now,
                items=[(item.item_id, item.score) for item in rec.items],
                context=ctx,
                variant=rec.variant,
                algo_version=rec.algo_version,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                stage=rec.stage.value,
                degraded=rec.degraded,
                reasons=[item.reasons for item in rec.items],
                rules=rec.rules,
                categories=rec.categories,
                error="" if rec.items else AnswerError.NO_STATE.value,
                method=method,
                allocation=self.recommender.shared.plan.experiment.allocation,
            )
        )
        if not rec.items:
            metrics.EMPTY_ANSWERS.labels(method, self.surfaces(ctx.surface)).inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, NO_STATE)
        _ANSWERS[method, rec.stage].inc()
        if method == "Recommend":
            self._count_items(rec, self.surfaces(ctx.surface))
        return to_response(rec)

    @staticmethod
    def _count_items(rec: Recommendation, surface: str) -> None:
        """Items served by slot kind (the dashboard's exploration share)."""
        explored = sum(1 for item in rec.items if EXPLORING_REASON in item.reasons)
        if explored:
            metrics.SERVED_ITEMS.labels(surface, "explored").inc(explored)
        metrics.SERVED_ITEMS.labels(surface, "ranked").inc(len(rec.items) - explored)

    def _log(self, pending: PendingExposure) -> None:
        """Exposure event and decision trace of one answer (both O(1), sent off the path)."""
        if self.exposures is not None:
            self.exposures.log(pending)
        if self.traces is not None:
            self.traces.log(pending)

    async def _guarded(
        self,
        method: str,
        call: Awaitable[Recommendation],
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
        user_id: str | None,
        session_id: str | None,
        ctx: Context,
    ) -> Recommendation:
        """Await a recommender call: an unexpected error is logged as a failed answer (exposure
        flagged ``error=internal`` / ``empty``, one log line), then answered INTERNAL."""
        try:
            return await call
        except Exception as exc:
            request_id = os.urandom(16).hex()
            assignment = self.recommender.shared.plan.assign(user_id or session_id or "")
            self._log(
                PendingExposure(
                    request_id=request_id,
                    user_id=user_id,
                    session_id=session_id,
                    ts=time.time(),
                    items=[],
                    context=ctx,
                    variant=assignment.variant,
                    algo_version=assignment.algo_version,
                    latency_ms=(time.perf_counter() - started) * 1000.0,
                    stage=Stage.NONE.value,
                    degraded=False,
                    error=AnswerError.INTERNAL.value,
                    method=method,
                )
            )
            log.error("%s failed (request_id %s): %r", method, request_id, exc)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (request_id {request_id})"
            )
            raise AssertionError("unreachable: context.abort raises") from exc
