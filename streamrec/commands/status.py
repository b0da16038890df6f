"""``streamrec status``: one screen for operators — lag, rates, freshness, drift, open alerts.

Measures consumer lag and event rates live from Kafka (end offsets read twice, ``--sample``
seconds apart), freshness from Redis, and reads the last health reports the live workers and
``streamrec monitor`` left in their heartbeats (drift signals, silence, firing alerts).
Each line is OK / WARN / CRIT; the exit code is the worst: 0 OK, 1 WARN, 2 CRIT. Kafka or
Redis unreachable: a one-line error and exit 2 (within a few network timeouts). The SLO error
budgets left come from ``STREAMREC_PROMETHEUS_URL`` (:mod:`monitoring.slo`); without one, or
when it does not answer, a line says why they are unknown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

import orjson
import typer

from core.errors import ConfigError, UnavailableError
from core.settings import Settings
from core.settings import settings as load
from monitoring.health import HealthThresholds
from monitoring.monitor_io import MonitorStore, OffsetSample, OffsetsProbe
from monitoring.slo import read_error_budget
from monitoring.status_report import Status, StatusInputs, build_status
from schemas.controls import parse_kill_switches
from schemas.keyspace import Keyspace


async def _kafka_side(
    settings: Settings, sample_s: float
) -> tuple[OffsetSample, dict[tuple[str, int], int] | None, float]:
    async with OffsetsProbe(settings) as probe:
        first = await probe.sample()
        if sample_s <= 0:
            return first, None, 0.0
        await asyncio.sleep(sample_s)
        at, ends, _ = await probe.end_offsets()
        return first, ends, max(1e-3, at - first.at)


async def gather_status(settings: Settings, sample_s: float) -> Status:
    """Measure everything and build the status (raises UnavailableError when unreachable)."""
    thresholds = HealthThresholds.from_settings(settings)
    store = await MonitorStore.connect(
        settings.redis_url,
        Keyspace(settings.key_prefix),
        timeout_s=settings.network_timeout_s,
        attempts=1,
    )
    try:
        kafka = asyncio.create_task(_kafka_side(settings, sample_s))
        # the SLO budgets (Prometheus): never raises, bounded by prometheus_timeout_s
        budget = asyncio.create_task(read_error_budget(settings))
        try:
            freshness = await store.read_freshness()
            workers = await store.read_heartbeats("worker")
            monitors = await store.read_heartbeats("monitor")
            switches = parse_kill_switches(await store.client.hgetall(store.keys.kill_switch))
        except BaseException:
            kafka.cancel()
            budget.cancel()
            await asyncio.gather(kafka, budget, return_exceptions=True)
            raise
        try:
            first, later, window = await kafka
        except BaseException:
            budget.cancel()
            await asyncio.gather(budget, return_exceptions=True)
            raise
        slo_budget = await budget
    finally:
        await store.aclose()
    inputs = StatusInputs(
        now=time.time(),
        group=settings.consumer_group,
        offsets=first,
        later_ends=later,
        rate_window_s=window,
        freshness=freshness,
        workers=workers,
        monitors=monitors,
        freshness_topics=tuple(settings.freshness_topics),
        kill_switches=switches,
        slo_budget=slo_budget,
    )
    return build_status(thresholds, inputs)


def command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of the lines.")
    ] = False,
    sample: Annotated[
        float,
        typer.Option(
            "--sample", help="Seconds between the two end-offset reads for event rates (0 = none)."
        ),
    ] = 1.0,
) -> None:
    """Lag, event rate, freshness, drift, open alerts, SLO budgets; exit 0 OK / 1 WARN / 2 CRIT."""
    if not 0 <= sample <= 60:
        raise ConfigError(f"--sample must be between 0 and 60 seconds, got {sample}")
    settings = load()
    # the one-line error says it all; aiokafka would log its connection errors as well
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    budget = sample + 4 * settings.network_timeout_s

    async def bounded() -> Status:
        try:
            async with asyncio.timeout(budget):
                return await gather_status(settings, sample)
        except TimeoutError as exc:
            raise UnavailableError(
                f"status timed out after {budget:g}s (Kafka {settings.kafka_bootstrap}, "
                f"Redis {settings.redis_url})"
            ) from exc

    status = asyncio.run(bounded())
    if as_json:
        print(orjson.dumps(status.doc, option=orjson.OPT_INDENT_2).decode())
    else:
        print(status.render())
    raise typer.Exit(status.exit_code)
