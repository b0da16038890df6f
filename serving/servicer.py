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
import time
from typing import Any

import grpc

from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.events import Context
from serving import metrics
from serving.convert import InvalidRequest, parse_recommend, parse_similar, to_response
from serving.exposure_log import ExposureLog, PendingExposure
from serving.recommender import Recommendation, Recommender

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

    def __init__(self, recommender: Recommender, exposures: ExposureLog | None) -> None:
        self.recommender = recommender
        self.exposures = exposures

    async def Recommend(
        self, request: pb.RecommendRequest, context: RecommendContext
    ) -> pb.RecommendResponse:
        started = time.perf_counter()
        try:
            try:
                query = parse_recommend(request)
            except InvalidRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            rec = await self.recommender.recommend(
                user_id=query.user_id,
                session_id=query.session_id,
                k=query.k,
                context=query.context,
                exclude=query.exclude,
                anchors=query.anchors,
                deadline=deadline_of(context),
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
                query = parse_similar(request)
            except InvalidRequest as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            rec = await self.recommender.similar_items(
                item_id=query.item_id,
                k=query.k,
                context=query.context,
                exclude=query.exclude,
                user_id=query.user_id,
                session_id=query.session_id,
                deadline=deadline_of(context),
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
        if not rec.items:
            metrics.EMPTY_ANSWERS.labels(method).inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, NO_STATE)
        _ANSWERS[method, rec.stage].inc()
        if self.exposures is not None:
            self.exposures.log(
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
                )
            )
        return to_response(rec)
