"""``streamrec recommend`` against the real server (test stack Redis, loopback gRPC)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from redis.asyncio import Redis

from core.settings import Settings
from schemas.keyspace import Keyspace
from tests.integration.serving_support import running, seed, serving_settings
from tests.support import run_cli, stderr_lines


async def test_recommend_prints_items_with_reasons(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path), log_exposures=False) as (server, _):
        env = {"STREAMREC_GRPC_ADDR": server.address}
        # the CLI is a subprocess; this event loop must keep serving while it runs
        as_json, plain = await asyncio.gather(
            asyncio.to_thread(run_cli, "recommend", "u1", "--k", "3", "--json", env=env),
            asyncio.to_thread(run_cli, "recommend", "u1", "--k", "3", env=env),
        )
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["user"] == "u1" and doc["k"] == 3
    assert (doc["variant"], doc["fallback_stage"]) == ("control", "FALLBACK_STAGE_NONE")
    assert len(doc["request_id"]) == 32 and not doc["degraded"]
    assert [item["item_id"] for item in doc["items"]] == ["b", "c", "d"]
    assert all(item["reasons"] == ["co-viewed with a"] for item in doc["items"])
    assert all(item["score"] > 0 for item in doc["items"])

    assert plain.returncode == 0, plain.stderr
    header, *lines = plain.stdout.splitlines()
    assert header.startswith("u1: 3 items, variant control, fallback none, request ")
    assert [line.split()[1] for line in lines] == ["b", "c", "d"]
    assert all(line.endswith("co-viewed with a") for line in lines)


async def test_recommend_without_a_server_is_one_line(settings: Settings, tmp_path: Path) -> None:
    async with running(serving_settings(settings, tmp_path), log_exposures=False) as (server, _):
        addr = server.address
    result = await asyncio.to_thread(
        run_cli,
        "recommend",
        "u1",
        env={"STREAMREC_GRPC_ADDR": addr, "STREAMREC_NETWORK_TIMEOUT_S": "2"},
    )
    assert result.returncode == 2
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"streamrec: error: server at {addr} does not answer")
    assert "Traceback" not in result.stderr
