"""The server under faults: Redis stopped / hung / never up, Kafka away, shutdown, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from serving import metrics
from tests.integration.serving_support import (
    RedisProcess,
    consume_exposures,
    ctx,
    env_for,
    free_port,
    recommender,
    running,
    seed,
    serving_settings,
    wait_for,
)
from tests.support import EVENTUALLY_S, REPO, STREAMREC

#: Client deadline of calls that must be answered while a dependency is away: far above any
#: answer time (so load cannot trip it), far below "held until the dependency is back"
#: (forever here), so a request that waits on Redis or Kafka still fails the test. How fast
#: the fallback answers is measured by ``streamrec bench serve``, not asserted here.
HELD_S = 30.0


def items_of(reply: pb.RecommendResponse) -> list[str]:
    return [i.item_id for i in reply.items]


def redis_errors() -> float:
    return metrics.REGISTRY.get_sample_value("streamrec_serving_redis_errors_total") or 0.0


async def seed_url(url: str, settings: Settings) -> None:
    client = Redis.from_url(url)
    try:
        await seed(client, Keyspace(settings.key_prefix))
    finally:
        await client.aclose()


async def test_redis_outage_falls_back_and_recovers_without_restart(
    settings: Settings, own_redis: RedisProcess, tmp_path: Path
) -> None:
    own_redis.start()
    await seed_url(own_redis.url, settings)
    cfg = serving_settings(settings, tmp_path, redis_url=own_redis.url)
    async with running(cfg) as (_server, channel):
        stub = recommender(channel)
        request = pb.RecommendRequest(user_id="u1", k=3, context=pb.Context(tenant="shop"))
        healthy = await stub.Recommend(request)
        assert items_of(healthy) == ["b", "c", "d"]

        own_redis.stop()
        errors_before = redis_errors()
        outage_ids = []
        for _ in range(5):
            reply = await stub.Recommend(request, timeout=HELD_S)
            assert reply.degraded
            assert items_of(reply) == ["s0", "s1", "s2"]  # the segment list cached before
            assert reply.fallback_stage == pb.FALLBACK_STAGE_SEGMENT_POPULARITY
            outage_ids.append(reply.request_id)
        similar = await stub.SimilarItems(pb.SimilarItemsRequest(item_id="a", k=2))
        assert similar.degraded and items_of(similar) == ["p0", "p1"]
        assert similar.fallback_stage == pb.FALLBACK_STAGE_GLOBAL_POPULARITY
        assert redis_errors() > errors_before

        own_redis.start()
        await seed_url(own_redis.url, settings)

        async def personal_again() -> bool:
            reply = await stub.Recommend(request)
            return not reply.degraded and items_of(reply) == ["b", "c", "d"]

        assert await wait_for(personal_again)
    found = await consume_exposures(settings, outage_ids)
    extra = found[outage_ids[0]][1]["context"]["extra"]
    # the flags of schemas.controls: a degraded answer counts as an error for eval ab
    assert extra == {
        "fallback_stage": "segment_popularity",
        "degraded": "1",
        "error": "state_unavailable",
    }


async def test_hung_redis_does_not_hold_requests_past_their_budget(
    settings: Settings, own_redis: RedisProcess, tmp_path: Path
) -> None:
    own_redis.start()
    await seed_url(own_redis.url, settings)
    # the socket timeout (network_timeout_s) is longer than the client's deadline: only the
    # server's request budget (0.2 s) can cut a read from the hung Redis short
    cfg = serving_settings(
        settings,
        tmp_path,
        redis_url=own_redis.url,
        request_timeout_s=0.2,
        network_timeout_s=2 * HELD_S,
    )
    async with running(cfg, log_exposures=False) as (_server, channel):
        stub = recommender(channel)
        request = pb.RecommendRequest(user_id="u1", k=3, context=pb.Context(tenant="shop"))
        assert not (await stub.Recommend(request)).degraded
        own_redis.pause()
        try:
            # u1's items are in the server's user cache now (nobody can change them while
            # Redis is paused): a user the server has not read yet needs Redis
            cold = pb.RecommendRequest(user_id="u-cold", k=3, context=pb.Context(tenant="shop"))
            started = time.monotonic()
            # answered, not DEADLINE_EXCEEDED after HELD_S: the server's budget ended the wait
            reply = await stub.Recommend(cold, timeout=HELD_S)
            assert reply.degraded and reply.items
            # ... after it waited for Redis (a lower bound: load can only add to it)
            assert time.monotonic() - started >= 0.15

            # a client deadline shorter than the budget wins: an answer or DEADLINE_EXCEEDED
            for n, deadline in enumerate((0.05, 0.01, 0.001)):
                cold = pb.RecommendRequest(user_id=f"u-cold-{n}", k=3)
                try:
                    reply = await stub.Recommend(cold, timeout=deadline)
                    assert reply.items
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            own_redis.resume()

        async def recovered() -> bool:
            return not (await stub.Recommend(request)).degraded

        assert await wait_for(recovered)


async def test_redis_down_from_start_uses_the_last_known_file(
    settings: Settings, redis: Redis, own_redis: RedisProcess, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    saved = tmp_path / "saved.json"
    cfg = serving_settings(settings, tmp_path, last_known_file=saved)
    async with running(cfg, log_exposures=False):
        pass  # a healthy run saves the global popularity list on shutdown
    assert json.loads(saved.read_text())["items"][0] == ["p0", 100.0]

    down = serving_settings(settings, tmp_path, redis_url=own_redis.url, last_known_file=saved)
    async with running(down, log_exposures=False) as (_server, channel):
        health = health_pb2_grpc.HealthStub(channel)
        check = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        reply = await recommender(channel).Recommend(pb.RecommendRequest(user_id="u1", k=2))
        assert items_of(reply) == ["p0", "p1"]
        assert reply.fallback_stage == pb.FALLBACK_STAGE_LAST_KNOWN
        assert list(reply.items[0].reasons) == ["popular (last known)"]
        assert reply.degraded and reply.state_age_seconds < 0

    seed_file = tmp_path / "seed.json"
    seed_file.write_text(json.dumps(["hand", "picked"]))
    seeded = serving_settings(
        settings, tmp_path, redis_url=own_redis.url, last_known_file=seed_file
    )
    async with running(seeded, log_exposures=False) as (_server, channel):
        reply = await recommender(channel).Recommend(pb.RecommendRequest(session_id="s", k=5))
        assert items_of(reply) == ["hand", "picked"]

    nothing = serving_settings(
        settings, tmp_path, redis_url=own_redis.url, last_known_file=tmp_path / "none.json"
    )
    empty_before = (
        metrics.REGISTRY.get_sample_value(
            "streamrec_serving_empty_answers_total", {"method": "Recommend", "surface": "home"}
        )
        or 0.0
    )
    async with running(nothing, log_exposures=False) as (_server, channel):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await recommender(channel).Recommend(pb.RecommendRequest(user_id="u1", k=2))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    empty_after = metrics.REGISTRY.get_sample_value(
        "streamrec_serving_empty_answers_total", {"method": "Recommend", "surface": "home"}
    )
    assert empty_after == empty_before + 1


async def test_kafka_away_buffers_exposures_and_drops_the_oldest(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    cfg = serving_settings(
        settings,
        tmp_path,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        exposure_buffer_size=5,
        network_timeout_s=0.5,
    )
    dropped_before = metrics.REGISTRY.get_sample_value("streamrec_exposure_dropped_total") or 0.0
    server_ref = None
    async with running(cfg) as (server, channel):
        server_ref = server
        for _ in range(8):
            # exposure logging never holds a request: a send waiting for the absent broker
            # would hold it past HELD_S
            reply = await recommender(channel).Recommend(
                pb.RecommendRequest(user_id="u1", k=2, context=ctx(world)), timeout=HELD_S
            )
            assert reply.items
        exposures = server.exposures
        assert exposures is not None
        assert exposures.depth == 5
        assert exposures.dropped == 3
        assert metrics.REGISTRY.get_sample_value("streamrec_exposure_buffer_depth") == 5
    assert server_ref.exposures is not None and server_ref.exposures.dropped == 8
    dropped_after = metrics.REGISTRY.get_sample_value("streamrec_exposure_dropped_total")
    assert dropped_after == dropped_before + 8


async def test_shutdown_flushes_buffered_exposures(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path)) as (_server, channel):
        stub = recommender(channel)
        replies = await asyncio.gather(
            *(
                stub.Recommend(pb.RecommendRequest(user_id=f"u{i}", k=2, context=ctx(world)))
                for i in range(30)
            )
        )
    found = await consume_exposures(settings, [r.request_id for r in replies], timeout_s=20.0)
    assert len(found) == 30
    assert {key for key, _ in found.values()} == {f"u{i}".encode() for i in range(30)}


async def test_serve_command_drains_on_sigterm(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    addr = f"127.0.0.1:{free_port()}"
    env = {**os.environ, **env_for(settings, {"STREAMREC_HOME": str(tmp_path)})}
    proc = await asyncio.create_subprocess_exec(
        str(STREAMREC),
        "serve",
        "--addr",
        addr,
        "--metrics-port",
        "0",
        env=env,
        cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                except grpc.aio.AioRpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            assert await wait_for(serving, every_s=0.2)
            reply = await recommender(channel).Recommend(
                pb.RecommendRequest(user_id="u1", k=2, context=ctx(world))
            )
            assert items_of(reply) == ["b", "d"]  # default category cap: one "shoes" in 2
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(EVENTUALLY_S):  # drained and exited, however slowly
            _, stderr_bytes = await proc.communicate()
        stderr = stderr_bytes.decode()
        assert proc.returncode == 0, stderr
        assert "signal received" in stderr and "stopped" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
