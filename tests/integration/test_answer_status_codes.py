"""streamrec_grpc_answers_total on a real server: every answer counted once with its code.

The server (real Redis state, the edge guard with an API key and a per-caller rate limit) is
called with answers of every kind — served, rejected by the servicer (INVALID_ARGUMENT), by
the guard (UNAUTHENTICATED, RESOURCE_EXHAUSTED), an Admin call without a token, a health
check — and its ``/metrics`` endpoint, scraped over HTTP, shows each under its service,
method, code and bounded surface.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from schemas.metrics import GRPC_ANSWERS, RECOMMENDER_SERVICE, SURFACE_OTHER
from serving.api_keys import hash_key
from tests.integration.serving_support import (
    admin,
    free_port,
    recommender,
    running,
    seed,
    serving_settings,
)

SURFACE = "codes-a"  # listed in slo_surfaces for this test only: its series are this test's
KEY = (("x-api-key", "key-web"),)
Labels = tuple[str, str, str, str]


def scrape(port: int) -> dict[Labels, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    out: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == GRPC_ANSWERS.name:
                labels = sample.labels
                key = (labels["service"], labels["method"], labels["code"], labels["surface"])
                out[key] = sample.value
    return out


async def code_of(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


async def test_every_answer_is_counted_with_its_code_and_surface(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    port = free_port()
    cfg = serving_settings(
        settings,
        tmp_path,
        server_metrics_port=port,
        slo_surfaces=(SURFACE,),
        serving_api_keys=(f"web:{hash_key('key-web')}",),
        serving_rate_limit_per_s=0.01,  # no token comes back during the test
        serving_rate_limit_burst=5,
    )
    async with running(cfg, log_exposures=False) as (_server, channel):
        before = await asyncio.to_thread(scrape, port)
        stub = recommender(channel)

        def ask(
            k: int = 3, surface: str = SURFACE, metadata: tuple[tuple[str, str], ...] = ()
        ) -> object:
            request = pb.RecommendRequest(user_id="u1", k=k, context=pb.Context(surface=surface))
            return stub.Recommend(request, timeout=5.0, metadata=metadata)

        codes = [
            await code_of(ask(metadata=KEY)),
            await code_of(ask(metadata=KEY)),
            await code_of(ask(k=1000, metadata=KEY)),  # the servicer: k out of range
            await code_of(ask(surface="somewhere-else", metadata=KEY)),
            await code_of(ask(metadata=KEY)),  # the 5th token
            await code_of(ask(metadata=KEY)),  # the guard: rate limit
            await code_of(ask()),  # the guard: no API key
        ]
        assert codes == [
            "OK",
            "OK",
            "INVALID_ARGUMENT",
            "OK",
            "OK",
            "RESOURCE_EXHAUSTED",
            "UNAUTHENTICATED",
        ]
        assert await code_of(admin(channel).GetAudit(pb.GetAuditRequest(limit=1))) == (
            "UNAUTHENTICATED"
        )
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
        after = await asyncio.to_thread(scrape, port)

    def grew(key: Labels) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    rec = (RECOMMENDER_SERVICE, "Recommend")
    assert grew((*rec, "OK", SURFACE)) == 3
    assert grew((*rec, "INVALID_ARGUMENT", SURFACE)) == 1
    assert grew((*rec, "RESOURCE_EXHAUSTED", SURFACE)) == 1
    assert grew((*rec, "UNAUTHENTICATED", SURFACE)) == 1
    assert grew((*rec, "OK", SURFACE_OTHER)) >= 1  # not listed: 'other' (other tests use it too)
    assert grew(("streamrec.v1.Admin", "GetAudit", "UNAUTHENTICATED", "")) >= 1
    assert grew(("grpc.health.v1.Health", "Check", "OK", "")) >= 1
    ours = sum(v for k, v in after.items() if k[3] == SURFACE) - sum(
        v for k, v in before.items() if k[3] == SURFACE
    )
    assert ours == 6  # every call on this surface counted exactly once
