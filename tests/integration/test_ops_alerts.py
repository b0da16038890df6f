"""Monitoring wired into the running system: a stuck worker, silent producers, status --json.

Real broker and Redis; the worker and ``streamrec monitor`` run as subprocesses with small
thresholds (``STREAMREC_*`` overrides) and a 0.5 s monitor interval, so each test takes
seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from core import kafka_clients
from core.settings import Settings
from monitoring.retune import RETUNE_COMMAND
from schemas.events import Alert
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from tests.support import EVENTUALLY_S, REPO, STREAMREC
from tests.worker_support import (
    consume_all,
    outcome,
    produce,
    start_worker,
    stop_worker,
    wait_applied,
    worker_env,
)
from tests.worker_support import run_status as status

#: The stuck-worker test is about lag: freshness far off, so a loaded machine's slow catch-up
#: (producers stopped more than a minute before the lag clears) does not keep status at WARN.
STUCK_FRESHNESS = {"freshness_warn_s": "600", "freshness_crit_s": "1200"}
#: Subject and metric of the re-tune decision's status line.
DECISION = ["retune", "decision"]
FAST = {
    "monitor_interval_s": "0.5",
    "alert_min_duration_s": "1",
    "lag_warn": "200",
    "lag_crit": "1000",
}
STUCK = {**FAST, **STUCK_FRESHNESS}


def start_monitor(settings: Settings, log: Path, **overrides: str) -> subprocess.Popen[bytes]:
    env = worker_env(settings, None, monitor_metrics_port="0", **overrides)
    handle = log.open("ab")
    return subprocess.Popen(
        [str(STREAMREC), "monitor", "--loglevel", "warning"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Subprocesses of a test, stopped (resumed first if paused) however the test ends."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
            stop_worker(proc)


def outcomes(n: int, ts: float | None = None, seed: int = 1) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        user = f"u{rng.randrange(5000)}"
        out.append((user.encode(), outcome(user, f"i{rng.randrange(300)}", ts or time.time())))
    return out


def exposures(n: int, ts: float | None = None) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"u{i}".encode(),
            orjson.dumps(
                {
                    "request_id": f"r{i}-{time.time_ns()}",
                    "user_id": f"u{i}",
                    "ts": ts or time.time(),
                    "items": [{"item_id": "i1", "rank": 1}, {"item_id": "i2", "rank": 2}],
                    "context": {"surface": "home"},
                    "variant": "control",
                }
            ),
        )
        for i in range(n)
    ]


async def alerts_on_topic(settings: Settings) -> list[Alert]:
    return [Alert.model_validate_json(raw) for raw in await consume_all(settings, Topic.ALERTS)]


async def wait_for(
    what: str, check: Callable[[], object], within_s: float, procs: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args!r} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.3)


async def test_stuck_worker_lag_goes_warn_then_crit_and_clears(
    settings: Settings, redis: Redis, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    worker = start_worker(settings, tmp_path / "worker.log", **STUCK)
    monitor = start_monitor(settings, tmp_path / "monitor.log", **STUCK)
    procs += [worker, monitor]
    await produce(settings, Topic.EXPOSURES, exposures(20))
    await produce(settings, Topic.OUTCOMES, outcomes(100))
    await wait_applied(settings, redis, (Topic.OUTCOMES, Topic.EXPOSURES), within_s=60, procs=procs)
    codes: list[int] = []

    def healthy() -> bool:
        codes.append(status(settings, "--sample", "0", **STUCK).returncode)
        return codes[-1] == 0

    await wait_for("status OK with a running worker", healthy, EVENTUALLY_S, procs)

    os.kill(worker.pid, signal.SIGSTOP)  # a stuck worker: alive, consuming nothing
    paused_at = time.time()
    # ~300 per partition (4 partitions): past lag_warn 200, below lag_crit 1000
    await produce(settings, Topic.OUTCOMES, outcomes(1200, seed=2))
    warn = status(settings, "--sample", "0", **STUCK)
    assert warn.returncode == 1, warn.stdout + warn.stderr
    assert any(
        line.startswith("WARN") and "consumer_lag" in line and "outcomes" in line
        for line in warn.stdout.splitlines()
    ), warn.stdout
    await produce(settings, Topic.OUTCOMES, outcomes(5000, seed=3))
    crit = status(settings, "--sample", "0", **STUCK)
    assert crit.returncode == 2, crit.stdout + crit.stderr
    assert any(
        line.startswith("CRIT") and "consumer_lag" in line and "outcomes" in line
        for line in crit.stdout.splitlines()
    ), crit.stdout

    async def lag_firing() -> bool:
        return any(
            a.kind == "consumer_lag" and a.state == "firing" and a.labels == {"topic": "outcomes"}
            for a in await alerts_on_topic(settings)
        )

    await wait_for("a firing consumer_lag alert.v1", lag_firing, EVENTUALLY_S, [monitor])
    firing = [a for a in await alerts_on_topic(settings) if a.kind == "consumer_lag"]
    assert firing[0].alert_id == "consumer_lag:topic=outcomes"
    assert firing[0].value >= 200 and firing[0].ts.timestamp() >= paused_at
    # keyed by alert_id, so one condition's events stay in order on one partition
    assert all(a.state == "firing" for a in firing)

    os.kill(worker.pid, signal.SIGCONT)
    await wait_applied(settings, redis, (Topic.OUTCOMES,), within_s=60, procs=procs)

    async def lag_resolved() -> bool:
        return any(
            a.kind == "consumer_lag" and a.state == "resolved"
            for a in await alerts_on_topic(settings)
        )

    await wait_for("a resolved consumer_lag alert.v1", lag_resolved, EVENTUALLY_S, procs)
    codes.clear()
    await wait_for("status OK again", healthy, EVENTUALLY_S, procs)
    # the worker was never blamed for lag: the independent monitor is the only emitter
    assert {a.kind for a in await alerts_on_topic(settings)} == {"consumer_lag"}


async def test_silent_producers_fire_freshness_alerts(
    settings: Settings, redis: Redis, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    quick = {**FAST, "freshness_warn_s": "3", "freshness_crit_s": "6"}
    worker = start_worker(settings, tmp_path / "worker.log", **quick)
    procs.append(worker)
    last_ts = time.time()
    await produce(settings, Topic.EXPOSURES, exposures(10, last_ts))
    await produce(settings, Topic.OUTCOMES, outcomes(50, last_ts))
    await wait_applied(settings, redis, (Topic.OUTCOMES, Topic.EXPOSURES), within_s=60, procs=procs)
    stopped_at = time.time()  # producers stop here
    procs.append(start_monitor(settings, tmp_path / "monitor.log", **quick))

    wanted = {
        "freshness:topic=outcomes",
        "freshness:topic=exposures",
        "topic_silence:topic=outcomes",
        "state_freshness",
    }

    async def fired() -> bool:
        ids = {a.alert_id for a in await alerts_on_topic(settings) if a.state == "firing"}
        return wanted <= ids

    await wait_for("freshness and silence alerts", fired, EVENTUALLY_S, procs)
    events = [a for a in await alerts_on_topic(settings) if a.alert_id in wanted]
    for alert in events:
        assert alert.state == "firing"
        assert alert.value >= 3.0, alert  # never before the configured silence
        assert alert.ts.timestamp() >= stopped_at
    by_id = {a.alert_id: a for a in events}
    assert "outcomes" in by_id["freshness:topic=outcomes"].cause
    assert "end offsets unchanged" in by_id["topic_silence:topic=outcomes"].cause
    # the worker (alive, idle) owns no freshness alert: each id was emitted once per episode
    assert len([a for a in events if a.severity.value == "warn"]) <= len(wanted)

    result = status(settings, "--sample", "0", **quick)
    assert result.returncode == 2, result.stdout
    assert "freshness:topic=outcomes" in result.stdout


async def test_status_json_shape_without_any_worker(settings: Settings, tmp_path: Path) -> None:
    await produce(settings, Topic.OUTCOMES, outcomes(7))
    result = status(settings, "--json", "--sample", "0.3")
    assert result.returncode == 2, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) >= {
        "overall",
        "exit_code",
        "generated_at",
        "group",
        "topics",
        "missing_topics",
        "state",
        "workers",
        "monitor",
        "drift",
        "alerts",
        "lines",
    }
    assert doc["overall"] == "CRIT" and doc["exit_code"] == 2
    assert doc["group"] == f"{settings.topic_prefix}-workers"
    assert set(doc["topics"]) == {"outcomes", "exposures", "items"}
    out = doc["topics"]["outcomes"]
    # no committed offset yet: the whole topic is lag
    assert out["lag"] == 7 and sum(out["partitions"].values()) == 7
    assert out["lag_max"] == max(out["partitions"].values())
    assert len(out["partitions"]) == settings.partitions
    assert out["events_per_s"] == 0.0
    assert out["newest_event_age_s"] is None  # never processed
    assert doc["state"] == {"write_age_s": None}
    assert doc["workers"] == [] and doc["monitor"] == [] and doc["alerts"] == []
    assert doc["missing_topics"] == []
    for line in doc["lines"]:
        assert set(line) == {"level", "subject", "metric", "value", "detail"}
        assert line["level"] in {"OK", "WARN", "CRIT"}
    by = {(line["subject"], line["metric"]): line for line in doc["lines"]}
    assert by[("workers", "alive")]["level"] == "WARN"
    assert by[("state", "never_written")]["level"] == "WARN"
    assert by[("outcomes", "newest_event_age_s")]["level"] == "CRIT"
    assert by[("outcomes", "consumer_lag")]["value"] == max(out["partitions"].values())

    text = status(settings, "--sample", "0")
    assert text.returncode == 2
    assert text.stdout.strip().splitlines()[-1] == "overall: CRIT"


async def test_status_unreachable_is_one_line(settings: Settings) -> None:
    result = status(settings, kafka_bootstrap="127.0.0.1:1", network_timeout_s="1")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("streamrec: error: Kafka at 127.0.0.1:1")


async def _traffic(settings: Settings, per_s: float, since: float, until: float, first: int) -> int:
    """Outcomes with event times on a grid of ``per_s`` a second over [since, until).

    Each event is produced once the clock has passed its event time (never ahead: the worker
    counts a future event time as now); a producer that fell behind catches up with the
    events it owes. So every second of event time holds exactly ``per_s`` events however the
    machine paces this loop: the drift windows are driven by the event times, not by the
    producer's speed. Returns the next event number.
    """
    producer = kafka_clients.producer(settings, client_id="streamrec-test", linger_ms=5)
    await producer.start()
    n = first
    owed = since
    try:
        while owed < until:
            due = min(time.time(), until)
            while owed < due:
                user = f"v{n}"
                await producer.send(
                    settings.topic(Topic.OUTCOMES.value),
                    outcome(user, f"i{n % 5}", owed),
                    key=user.encode(),
                )
                n += 1
                owed = since + (n - first) / per_s
            await producer.flush()
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return n


async def test_volume_step_through_a_real_worker_emits_a_drift_alert(
    settings: Settings, redis: Redis, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # 1-s buckets, a 4-s current window against the 12 s before it
    window_s, reference_s = 4.0, 12.0
    drift = {
        **FAST,
        "drift_bucket_s": "1",
        "drift_window_s": f"{window_s:g}",
        "drift_reference_windows": f"{reference_s / window_s:g}",
        "drift_min_events": "20",
        "drift_volume_ratio": "3",
        # the monitor state (with its start time) saved at once, and small
        "monitor_state_save_s": "0.5",
        "drift_seen_capacity": "1000",
    }
    worker = start_worker(settings, tmp_path / "worker.log", **drift)
    procs.append(worker)
    states = Keyspace(settings.key_prefix).stats("monitor:worker:*")
    started_at: list[float] = []

    async def monitor_started() -> bool:
        async for key in redis.scan_iter(match=states):
            raw = await redis.get(key)
            if raw is not None:
                started_at.append(float(orjson.loads(raw)["windows"]["started_at"]))
                return True
        return False

    await wait_for("the worker monitor's saved state", monitor_started, EVENTUALLY_S, procs)
    # The windows count event times, and the rates divide by the seconds the monitor has been
    # running: steady traffic from the monitor's start on, until a whole current and
    # reference window have been steady, is steady to it however late this test produces it.
    since = started_at[0]
    step = since + window_s + reference_s + 1.0
    n = await _traffic(settings, 20, since, step, 0)

    async def volume_alert() -> bool:
        return any(a.kind == "drift_volume" for a in await alerts_on_topic(settings))

    assert not await volume_alert()  # steady traffic: no false alarm
    # ×10: the ratio is ≥ 3 from ~1 s to ~7 s after the step (4-s window against 12 s)
    n = await _traffic(settings, 200, step, step + 8.0, n)
    await wait_for("a drift_volume alert.v1 from the worker", volume_alert, EVENTUALLY_S, procs)
    volume = [a for a in await alerts_on_topic(settings) if a.kind == "drift_volume"]
    # the first event of the one alert id (in order: the topic is keyed by alert id); once the
    # step is over the episode resolves and the silence after it may fire one more
    alert = volume[0]
    assert {a.alert_id for a in volume} == {"drift_volume:topic=outcomes"}
    assert alert.state == "firing" and alert.value >= 3.0 and "volume" in alert.cause
    others = {a.kind for a in await alerts_on_topic(settings)} - {"drift_volume"}
    assert not others, others


async def _ctr_traffic(
    settings: Settings, stop: asyncio.Event, click_every: list[int], per_s: float = 20.0
) -> int:
    """Exposures of 5 items at ``per_s`` a second on the wall clock (home / B), each followed
    by a click on its first item when its number is a multiple of ``click_every[0]`` (2: CTR
    10 %, 20: CTR 1 %); the clicks join their exposure in the real worker. Runs until ``stop``."""
    producer = kafka_clients.producer(settings, client_id="streamrec-test", linger_ms=5)
    await producer.start()
    n = 0
    started = time.monotonic()
    try:
        while not stop.is_set():
            owed = int((time.monotonic() - started) * per_s)
            while n < owed:
                user, rid, now = f"c{n % 500}", f"ctr-{n}-{time.time_ns()}", time.time()
                shown = [f"i{(n + k) % 50}" for k in range(5)]
                items = [{"item_id": item, "rank": k + 1} for k, item in enumerate(shown)]
                exposure = {
                    "request_id": rid,
                    "user_id": user,
                    "ts": now,
                    "items": items,
                    "context": {"surface": "home"},
                    "variant": "B",
                }
                await producer.send(
                    settings.topic(Topic.EXPOSURES.value), orjson.dumps(exposure), key=user.encode()
                )
                if n % click_every[0] == 0:
                    click = outcome(user, shown[0], now, "click", request_id=rid)
                    await producer.send(
                        settings.topic(Topic.OUTCOMES.value), click, key=user.encode()
                    )
                n += 1
            await producer.flush()
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()
    return n


async def test_sustained_ctr_drop_makes_status_say_retune_now(
    settings: Settings, redis: Redis, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    # 0.5-s buckets, a 2-s current window against the 16 s before it; a plans' CTR drop that
    # is out at every evaluation for 3 s is sustained
    window_s, reference_s = 2.0, 16.0
    quick = {
        **FAST,
        "drift_bucket_s": "0.5",
        "drift_window_s": f"{window_s:g}",
        "drift_reference_windows": f"{reference_s / window_s:g}",
        "drift_ctr_min_impressions": "100",
        "drift_plan_ctr_sustain_s": "3",
        "freshness_warn_s": "30",
        "freshness_crit_s": "60",
    }
    worker = start_worker(settings, tmp_path / "worker.log", **quick)
    monitor = start_monitor(settings, tmp_path / "monitor.log", **quick)
    procs += [worker, monitor]
    monitors = Keyspace(settings.key_prefix).heartbeat("monitor", "*")

    async def monitor_up() -> bool:
        return bool([k async for k in redis.scan_iter(match=monitors)])

    await wait_for("the monitor's heartbeat", monitor_up, EVENTUALLY_S, procs)
    click_every = [2]  # 1 click per 2 exposures of 5 items: CTR 10 %
    stop = asyncio.Event()
    traffic = asyncio.create_task(_ctr_traffic(settings, stop, click_every))
    try:
        # steady CTR until the reference window is full (window + reference + margin)
        await asyncio.sleep(window_s + reference_s + 3)
        assert not traffic.done()

        def decision() -> tuple[str | None, str]:
            result = status(settings, "--json", "--sample", "0", **quick)
            doc = json.loads(result.stdout)
            retune = doc.get("retune") or {}
            return retune.get("decision"), result.stdout

        before, raw = await asyncio.to_thread(decision)
        assert before == "within_bounds", raw  # the monitor decides, and nothing is out

        click_every[0] = 20  # CTR 10 % → 1 %
        dropped_at = time.time()
        lines: list[str] = []

        async def retune_now() -> bool:
            result = await asyncio.to_thread(status, settings, "--sample", "0", **quick)
            lines[:] = [x for x in result.stdout.splitlines() if x.split()[1:3] == DECISION]
            return any("re-tune now" in x for x in lines)

        await wait_for("status saying re-tune now", retune_now, EVENTUALLY_S, procs)
    finally:
        stop.set()
        await traffic
    (line,) = lines
    assert line.startswith("CRIT"), line
    assert "CTR drop sustained for ≥ 3 s on home|B" in line, line
    assert f"run: {RETUNE_COMMAND}" in line and "eval tune PATH --holdout-days D" in line

    async def retune_alert() -> bool:
        return any(
            a.kind == "retune" and a.state == "firing" and a.severity.value == "crit"
            for a in await alerts_on_topic(settings)
        )

    await wait_for("a firing retune alert.v1 (crit)", retune_alert, EVENTUALLY_S, procs)
    retune = [a for a in await alerts_on_topic(settings) if a.kind == "retune"]
    alert = next(a for a in retune if a.severity.value == "crit")
    assert alert.alert_id == "retune" and alert.ts.timestamp() >= dropped_at
    assert alert.cause.startswith("re-tune now: CTR drop sustained")
