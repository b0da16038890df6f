"""RecommenderServicer: failed and empty answers are logged (exposure + trace) before the
error status, flagged per schemas.controls."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from schemas import recommender_pb2 as pb
from schemas.rules import ExperimentConfig, Variant
from serving.config import RankerConfig
from serving.experiments import ExperimentPlan
from serving.exposure_log import PendingExposure, build_exposure
from serving.ranker import Stage
from serving.recommender import Recommendation
from serving.servicer import RecommenderServicer


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(details)


class Log:
    def __init__(self) -> None:
        self.logged: list[PendingExposure] = []

    def log(self, pending: PendingExposure) -> None:
        self.logged.append(pending)


class Shared:
    plan = ExperimentPlan.build(
        ExperimentConfig(
            name="e", variants=[Variant(name="control", share=0.5), Variant(name="b", share=0.5)]
        ),
        base=RankerConfig(),
        algo_version="v1",
        source="file",
    )


class Failing:
    shared = Shared()

    def __init__(self, answer: Recommendation | None) -> None:
        self.answer = answer

    async def recommend(self, **_kw: Any) -> Recommendation:
        if self.answer is None:
            raise RuntimeError("boom")
        return self.answer


def servicer(answer: Recommendation | None) -> tuple[RecommenderServicer, Log, Log]:
    exposures, traces = Log(), Log()
    made = RecommenderServicer(Failing(answer), exposures, traces=traces)  # type: ignore[arg-type]
    return made, exposures, traces


async def test_an_unexpected_error_is_logged_as_a_failed_answer_then_internal() -> None:
    made, exposures, traces = servicer(None)
    context = Context()
    with pytest.raises(Aborted):
        await made.Recommend(pb.RecommendRequest(user_id="u1", k=3), context)  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.INTERNAL
    (pending,) = exposures.logged
    assert traces.logged == [pending]
    assert pending.request_id in context.details and "boom" not in context.details
    assert pending.variant == Shared.plan.assign("u1").variant
    event = build_exposure(pending)
    assert event.items == []
    assert event.context.extra["error"] == "internal" and event.context.extra["empty"] == "1"


async def test_an_empty_answer_is_logged_then_unavailable() -> None:
    empty = Recommendation(
        request_id="r" * 32,
        items=(),
        stage=Stage.LAST_KNOWN,
        variant="b",
        algo_version="v1",
        state_age_s=-1.0,
        degraded=True,
        unit="u1",
        now=1_700_000_000.0,
    )
    made, exposures, _traces = servicer(empty)
    context = Context()
    with pytest.raises(Aborted):
        await made.Recommend(pb.RecommendRequest(user_id="u1", k=3), context)  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAVAILABLE
    (pending,) = exposures.logged
    extra = build_exposure(pending).context.extra
    assert extra["error"] == "no_state" and extra["empty"] == "1" and extra["degraded"] == "1"
    assert build_exposure(pending).variant == "b"
