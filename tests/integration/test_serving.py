"""The gRPC server end to end: real Redis, real Kafka, real grpc.aio over loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from serving import metrics
from serving.state_reader import REQUEST_CLIENTS, RequestClientKind
from tests.integration.serving_support import (
    consume_exposures,
    ctx,
    free_port,
    recommender,
    running,
    seed,
    serving_settings,
)


async def test_recommend_puts_co_viewed_items_first_and_logs_the_exposure(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    cfg = serving_settings(settings, tmp_path)
    async with running(cfg) as (_server, channel):
        stub = recommender(channel)
        reply = await stub.Recommend(pb.RecommendRequest(user_id="u1", k=3, context=ctx(world)))
        assert [i.item_id for i in reply.items] == ["b", "c", "d"]
        assert all(list(i.reasons) == ["co-viewed with a"] for i in reply.items)
        assert reply.fallback_stage == pb.FALLBACK_STAGE_NONE
        assert (reply.variant, reply.algo_version) == ("control", cfg.algo_version)
        assert not reply.degraded
        # the seed's last write was 2 s before world.now: the age is that plus the time since,
        # bounded by clocks read around the call rather than by a guess of how long it took
        assert 2.0 <= reply.state_age_seconds <= time.time() - world.now + 2.0
        assert len(reply.request_id) == 32

        # seen (a2) and the anchor itself (a) are never recommended; backfill follows
        wide = await stub.Recommend(pb.RecommendRequest(user_id="u1", k=6, context=ctx(world)))
        items = [i.item_id for i in wide.items]
        assert items[:3] == ["b", "c", "d"]
        assert "a" not in items and "a2" not in items
        assert items[3:] == ["s0", "s1", "s2"]
        assert list(wide.items[3].reasons) == ["trending in shop/home"]
        assert wide.fallback_stage == pb.FALLBACK_STAGE_SEGMENT_POPULARITY

    found = await consume_exposures(settings, [reply.request_id, wide.request_id])
    key, event = found[reply.request_id]
    assert key == b"u1"
    assert event["schema"] == "exposure.v1"
    assert event["user_id"] == "u1"
    assert event["variant"] == "control"
    assert event["algo_version"] == cfg.algo_version
    assert [(i["item_id"], i["rank"]) for i in event["items"]] == [("b", 1), ("c", 2), ("d", 3)]
    assert event["items"][0]["score"] == pytest.approx(reply.items[0].score)
    assert event["context"]["tenant"] == "shop"
    assert event["context"]["extra"]["fallback_stage"] == "none"
    assert event["latency_ms"] >= 0
    assert found[wide.request_id][1]["context"]["extra"]["fallback_stage"] == "segment_popularity"


async def test_session_recommend_anchors_and_similar_items(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path)) as (_server, channel):
        stub = recommender(channel)
        session = await stub.Recommend(
            pb.RecommendRequest(session_id="sess1", k=2, context=ctx(world))
        )
        assert [i.item_id for i in session.items] == ["y", "z"]
        assert list(session.items[0].reasons) == ["co-viewed with x"]

        anchored = await stub.Recommend(
            pb.RecommendRequest(
                user_id="nobody",
                k=2,
                context=ctx(world),
                anchor_item_ids=["x"],
                exclude_item_ids=["y"],
            )
        )
        assert anchored.items[0].item_id == "z"
        assert "x" not in [i.item_id for i in anchored.items]

        similar = await stub.SimilarItems(
            pb.SimilarItemsRequest(item_id="a", k=2, context=ctx(world), exclude_item_ids=["b"])
        )
        assert [i.item_id for i in similar.items] == ["c", "d"]
        assert similar.fallback_stage == pb.FALLBACK_STAGE_NONE

        cold = await stub.SimilarItems(
            pb.SimilarItemsRequest(item_id="unknown", k=3, context=pb.Context(tenant="other"))
        )
        assert [i.item_id for i in cold.items] == ["p0", "p1", "p2"]
        assert list(cold.items[0].reasons) == ["popular"]
        assert cold.fallback_stage == pb.FALLBACK_STAGE_GLOBAL_POPULARITY
    found = await consume_exposures(settings, [similar.request_id, session.request_id])
    assert found[similar.request_id][1]["user_id"] == "anonymous"
    session_event = found[session.request_id][1]
    assert session_event["user_id"] == "sess1"
    assert session_event["context"]["extra"]["session_id"] == "sess1"


@pytest.mark.parametrize("client", REQUEST_CLIENTS)
async def test_state_changes_are_seen_without_restart(
    settings: Settings, redis: Redis, tmp_path: Path, client: RequestClientKind
) -> None:
    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    cfg = serving_settings(settings, tmp_path)
    async with running(cfg, client=client) as (server, channel):
        assert server.recommender is not None
        reader = server.recommender.reader
        assert reader.requests.tracking and (reader.wire is not None) == (client == "wire")
        stub = recommender(channel)
        request = pb.RecommendRequest(user_id="u2", k=1, context=ctx(world))
        first = await stub.Recommend(request)
        assert first.items[0].item_id == "s0"  # no history: segment popularity
        await redis.lpush(keys.user_recent("u2"), f"{time.time():.3f}|x")
        second = await stub.Recommend(request)
        assert second.items[0].item_id == "y"  # per-request state: immediately visible
        # x's row was cached by that request: a write drops it (invalidation)
        await redis.zadd(keys.covis("x"), {"w": 20.0})
        assert (await stub.Recommend(request)).items[0].item_id == "w"
        await redis.zrem(keys.covis("x"), "w")
        await redis.hset(keys.item_categories, "y", "gone")
        await redis.sadd(keys.unavailable_items, "y")
        await redis.incr(keys.catalog_version)
        await asyncio.sleep(1.0)  # catalog: reloaded by the refresher
        third = await stub.Recommend(request)
        assert third.items[0].item_id == "z"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.RecommendRequest(user_id="u", k=0), "k must be between 1 and 100"),
        (pb.RecommendRequest(user_id="u", k=101), "k must be between 1 and 100"),
        (pb.RecommendRequest(k=5), "exactly one of user_id or session_id"),
        (pb.RecommendRequest(user_id="u", session_id="s", k=5), "exactly one"),
        (pb.RecommendRequest(user_id="u" * 129, k=5), "user_id is longer than 128"),
        (pb.RecommendRequest(user_id="u", k=5, exclude_item_ids=["i"] * 101), "at most 100"),
        (pb.RecommendRequest(user_id="u", k=5, anchor_item_ids=[""]), "anchor_item_ids"),
        (
            pb.RecommendRequest(
                user_id="u", k=5, context=pb.Context(extra={f"k{i}": "v" for i in range(31)})
            ),
            "context.extra has 31 keys",
        ),
        (
            pb.RecommendRequest(
                user_id="u", k=5, context=pb.Context(extra={"fallback_stage": "x"})
            ),
            "reserved",
        ),
        (pb.SimilarItemsRequest(k=5), "item_id is required"),
        (pb.SimilarItemsRequest(item_id="i", k=500), "k must be between"),
        (pb.SimilarItemsRequest(item_id="i", k=5, user_id="u", session_id="s"), "at most one"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    settings: Settings, tmp_path: Path, request_: object, message: str
) -> None:
    async with running(serving_settings(settings, tmp_path), log_exposures=False) as (_s, channel):
        stub = recommender(channel)
        call = (
            stub.Recommend(request_)
            if isinstance(request_, pb.RecommendRequest)
            else stub.SimilarItems(request_)  # type: ignore[arg-type]
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (info.value.details() or "")


async def test_unknown_fields_are_rejected(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    good = pb.RecommendRequest(user_id="u", k=3).SerializeToString()
    async with running(serving_settings(settings, tmp_path), log_exposures=False) as (_s, channel):
        raw = channel.unary_unary(
            "/streamrec.v1.Recommender/Recommend",
            request_serializer=lambda b: b,
            response_deserializer=pb.RecommendResponse.FromString,
        )
        ok = await raw(good)
        assert [i.item_id for i in ok.items] == ["p0", "p1", "p2"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(good + bytes([0xF8, 0x01, 0x01]))  # field 31, varint 1
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unknown field number(s) [31]" in (info.value.details() or "")


async def test_health_reflection_and_metrics(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    port = free_port()
    cfg = serving_settings(settings, tmp_path, server_metrics_port=port)
    async with running(cfg) as (server, channel):
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "streamrec.v1.Recommender", "streamrec.v1.Admin"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        def reflect() -> tuple[list[str], list[str]]:
            with grpc.insecure_channel(server.address) as sync_channel:
                db = ProtoReflectionDescriptorDatabase(sync_channel)
                services = list(db.get_services())
                from google.protobuf.descriptor_pool import DescriptorPool

                pool = DescriptorPool(db)
                service = pool.FindServiceByName("streamrec.v1.Recommender")
                return services, [m.name for m in service.methods]

        services, methods = await asyncio.to_thread(reflect)
        assert {"streamrec.v1.Recommender", "streamrec.v1.Admin", "grpc.health.v1.Health"} <= set(
            services
        )
        assert methods == ["Recommend", "SimilarItems"]

        empty_before = metrics.REGISTRY.get_sample_value(
            "streamrec_serving_empty_answers_total", {"method": "Recommend", "surface": "home"}
        )
        primary_before = (
            metrics.REGISTRY.get_sample_value(
                "streamrec_serving_answers_total", {"method": "Recommend", "stage": "primary"}
            )
            or 0.0
        )
        await recommender(channel).Recommend(
            pb.RecommendRequest(user_id="u1", k=2, context=ctx(world))
        )
        primary_after = metrics.REGISTRY.get_sample_value(
            "streamrec_serving_answers_total", {"method": "Recommend", "stage": "primary"}
        )
        assert primary_after == primary_before + 1
        # an answer is not an empty answer (the registry is per process: other tests may have
        # counted empty answers before this one)
        empty_after = metrics.REGISTRY.get_sample_value(
            "streamrec_serving_empty_answers_total", {"method": "Recommend", "surface": "home"}
        )
        assert empty_after == empty_before

        def scrape() -> str:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                body: bytes = resp.read()
                return body.decode()

        text = await asyncio.to_thread(scrape)
        for name in (
            "streamrec_serving_latency_seconds_bucket",
            "streamrec_serving_answers_total",
            "streamrec_serving_state_age_seconds",
            "streamrec_exposure_buffer_depth",
        ):
            assert name in text


async def test_session_neighbours_give_their_reason_and_cost_nothing_when_off(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """With ``ranker_session_blend`` > 0 u1 (who viewed a) gets e, which only u2 — another
    user of a — viewed, for "similar sessions viewed it"; with the blend 0 the session
    indexes are never read: ``sn:x`` is a trap (a string, so any ZREVRANGE on it fails)."""
    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    now = world.now
    await redis.zadd(keys.session_index("a"), {"u2": now - 100, "u1": now - 60})
    await redis.lpush(keys.user_recent("u2"), f"{now - 110:.3f}|e", f"{now - 100:.3f}|a")
    await redis.set(keys.session_index("x"), "trap")
    await redis.lpush(keys.user_recent("u3"), f"{now - 10:.3f}|x")

    async with running(serving_settings(settings, tmp_path, ranker_session_blend=0.5)) as (
        _server,
        channel,
    ):
        stub = recommender(channel)
        reply = await stub.Recommend(pb.RecommendRequest(user_id="u1", k=5, context=ctx(world)))
        reasons = {i.item_id: list(i.reasons) for i in reply.items}
        assert reasons["e"] == ["similar sessions viewed it"], reasons
        assert reasons["b"][0] == "co-viewed with a"
        assert not reply.degraded
        trapped = await stub.Recommend(pb.RecommendRequest(user_id="u3", k=2, context=ctx(world)))
        assert trapped.degraded  # the trap proves the index is read when the source is on

    async with running(serving_settings(settings, tmp_path)) as (_server, channel):
        stub = recommender(channel)
        reply = await stub.Recommend(pb.RecommendRequest(user_id="u3", k=2, context=ctx(world)))
        assert not reply.degraded
        assert [i.item_id for i in reply.items] == ["y", "z"]
        reply = await stub.Recommend(pb.RecommendRequest(user_id="u1", k=5, context=ctx(world)))
        assert "e" not in [i.item_id for i in reply.items]
        assert all("similar sessions viewed it" not in i.reasons for i in reply.items)
