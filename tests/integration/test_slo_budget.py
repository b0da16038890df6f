"""SLOs end to end: a real grpc.aio server scraped by a real Prometheus with the project's rules.

The server starts while its Redis is down and has no last-known list, so its first answers on
one surface are empty (UNAVAILABLE); then Redis comes up with state and both surfaces are
answered. Prometheus (Debian's package, :class:`streamrec.stack.monitoring.MonitoringStack`,
scraping and evaluating every second; the budget group's 1-minute interval shortened to 1 s in
a copy of alerts.yml) must then show the answers by code, fire the fast-burn alerts for the
failing surface only, and record the budgets that ``streamrec status`` reads: spent on the
failing surface, untouched on the healthy one. A Prometheus that is gone becomes a status line
with the reason; no Prometheus configured is said plainly.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from redis.asyncio import Redis

from core.settings import Settings, load_settings
from monitoring.levels import Level
from monitoring.slo import BUDGET_INTERVAL, read_error_budget
from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from streamrec.commands.status import gather_status
from streamrec.stack.monitoring import PROMETHEUS_CONFIG, MonitoringStack, Tuning
from streamrec.stack.tools import missing_tools, tools_dir
from tests.integration.serving_support import (
    RedisProcess,
    free_port,
    recommender,
    running,
    seed,
    serving_settings,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

OK, BAD = "slo-ok", "slo-bad"  # surfaces of this test only (the metrics registry is shared)
WITHIN_S = 90.0


def quick_rules(into: Path) -> Path:
    """Copies of the rule files prometheus.yml loads; the SLO budget group evaluated every 1 s."""
    into.mkdir(parents=True, exist_ok=True)
    for name in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        doc = yaml.safe_load((PROMETHEUS_CONFIG.parent / name).read_text())
        shortened = [g for g in doc["groups"] if g.get("interval") == BUDGET_INTERVAL]
        for group in shortened:
            group["interval"] = "1s"
        assert len(shortened) == (name == "alerts.yml"), name
        (into / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    return into


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    own = RedisProcess(tmp_path)  # not started: the server starts while it is down
    try:
        yield own
    finally:
        own.stop()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as answer:
        doc = json.loads(answer.read())
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


async def ask(stub: Any, surface: str) -> grpc.StatusCode:
    request = pb.RecommendRequest(user_id="u1", k=3, context=pb.Context(surface=surface))
    try:
        await stub.Recommend(request, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_budgets_and_burn_alerts_from_a_real_prometheus(
    settings: Settings, tmp_path: Path, redis: RedisProcess
) -> None:
    shared_tools = tools_dir(load_settings())  # fetched once, shared with the other tests
    server_settings = serving_settings(
        settings,
        tmp_path,
        redis_url=redis.url,
        server_metrics_port=free_port(),
        slo_surfaces=(OK, BAD),
    )
    prom_settings = server_settings.model_copy(
        update={
            "home": tmp_path / "home",
            "tools_dir": shared_tools,
            "worker_metrics_port": 0,
            "monitor_metrics_port": 0,
            "prometheus_port": free_port(),
            "alertmanager_port": free_port(),
        }
    )
    missing = missing_tools(prom_settings)
    assert not missing, f"Prometheus is not available here: {missing}"
    stack = MonitoringStack(
        prom_settings,
        tuning=Tuning(
            scrape_interval="1s",
            evaluation_interval="1s",
            rules_dir=quick_rules(tmp_path / "rules"),
        ),
        timeout_s=120.0,
    )
    prometheus = stack.url("prometheus")
    # status reads the shared test stack's Kafka and Redis, and this Prometheus
    status_settings = settings.model_copy(
        update={"prometheus_url": prometheus, "prometheus_timeout_s": 2.0}
    )

    async with running(server_settings, log_exposures=False) as (_server, channel):
        await asyncio.to_thread(stack.start)
        try:
            stub = recommender(channel)

            async def scraped(surface: str, code: str, at_least: int) -> None:
                """Wait until Prometheus holds the series (a counter's first sample is no
                increase for rate(): each series is scraped once before most of its answers)."""

                async def seen() -> bool:
                    rows = await asyncio.to_thread(
                        query,
                        prometheus,
                        f'sum(streamrec_grpc_answers_total{{surface="{surface}",code="{code}"}})',
                    )
                    return bool(rows) and float(rows[0]["value"][1]) >= at_least

                assert await wait_for(seen, timeout_s=WITHIN_S, every_s=0.5), (surface, code)

            # Redis down, nothing known: every answer is empty (UNAVAILABLE) on the bad surface
            assert await ask(stub, BAD) is grpc.StatusCode.UNAVAILABLE
            await scraped(BAD, "UNAVAILABLE", 1)
            codes = [await ask(stub, BAD) for _ in range(9)]
            assert set(codes) == {grpc.StatusCode.UNAVAILABLE}

            redis.start()
            client = Redis.from_url(redis.url)
            try:
                await seed(client, Keyspace(server_settings.key_prefix))
            finally:
                await client.aclose()

            async def answered() -> bool:  # asked on BAD: OK must see no error at all
                return await ask(stub, BAD) is grpc.StatusCode.OK

            assert await wait_for(answered, timeout_s=30.0), "server never recovered"
            assert await ask(stub, OK) is grpc.StatusCode.OK
            await scraped(BAD, "OK", 1)
            await scraped(OK, "OK", 1)
            for _ in range(20):
                assert await ask(stub, OK) is grpc.StatusCode.OK
            for _ in range(10):
                assert await ask(stub, BAD) is grpc.StatusCode.OK
            await scraped(BAD, "OK", 11)
            await scraped(OK, "OK", 21)
            errors = await asyncio.to_thread(
                query,
                prometheus,
                f'sum by (surface, code) (streamrec_grpc_answers_total{{surface=~"{OK}|{BAD}"}})',
            )
            counts = {(r["metric"]["surface"], r["metric"]["code"]) for r in errors}
            assert counts == {(BAD, "UNAVAILABLE"), (BAD, "OK"), (OK, "OK")}

            async def budgets() -> dict[tuple[str, str | None], float]:
                reading = await read_error_budget(status_settings)
                assert reading.error is None, reading.error
                rows = {(r.slo, r.surface): r.remaining for r in reading.rows}
                wanted = [(s, f) for s in ("availability", "empty_answers") for f in (OK, BAD)]
                done = all(k in rows and not math.isnan(rows[k]) for k in wanted)
                return rows if done and rows["availability", BAD] < 0 else {}

            rows = await wait_for(budgets, timeout_s=WITHIN_S, every_s=0.5)
            assert rows, f"no spent budget on {BAD}: {await read_error_budget(status_settings)}"
            # 9+ errors after the first scrape, of ~20 answers on BAD: far past a 0.1 % budget
            assert rows["availability", BAD] < 0 and rows["empty_answers", BAD] < 0
            assert rows["availability", OK] == 1.0 and rows["empty_answers", OK] == 1.0

            async def paging() -> set[tuple[str, str]]:
                firing = await asyncio.to_thread(
                    query, prometheus, 'ALERTS{alertstate="firing",alertname=~"StreamrecSlo.*"}'
                )
                return {
                    (a["metric"]["alertname"], a["metric"].get("surface", ""))
                    for a in firing
                    if a["metric"].get("surface") in (OK, BAD)
                }

            want = {
                ("StreamrecSloAvailabilityFastBurn", BAD),
                ("StreamrecSloEmptyAnswersFastBurn", BAD),
            }

            async def fired() -> bool:
                return want <= await paging()

            assert await wait_for(fired, timeout_s=WITHIN_S, every_s=0.5), await paging()
            assert all(surface == BAD for _, surface in await paging())

            status = await gather_status(status_settings, 0)
            lines = {line.subject: line for line in status.report.lines}
            bad = lines[f"slo/availability/{BAD}"]
            assert bad.level is Level.WARN and "error budget spent" in bad.detail
            good = lines[f"slo/availability/{OK}"]
            assert good.level is Level.OK and good.detail.startswith("100.0 % of the 30d")
            budgets_doc = {
                (b["slo"], b["surface"]): b["remaining"] for b in status.doc["slo"]["budgets"]
            }
            assert budgets_doc["availability", OK] == 1.0
            assert status.doc["slo"]["prometheus"] == prometheus
        finally:
            await asyncio.to_thread(stack.stop)

    # Prometheus gone: a line with the reason, not a crash
    status = await gather_status(status_settings, 0)
    (gone,) = [line for line in status.report.lines if line.subject == "slo"]
    assert gone.level is Level.WARN
    assert f"Prometheus at {prometheus} did not answer" in gone.detail
    assert "refused" in gone.detail.lower()
    assert status.doc["slo"]["error"]

    unset = await gather_status(settings.model_copy(update={"prometheus_url": None}), 0)
    (plain,) = [line for line in unset.report.lines if line.subject == "slo"]
    assert plain.level is Level.OK and "no Prometheus configured" in plain.detail
