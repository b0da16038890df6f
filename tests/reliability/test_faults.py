"""Faults under load: Redis and Kafka restarts, a request burst, garbage on every input.

Each test states what must hold afterwards — nothing lost, nothing counted twice, no crash —
and checks it against a known answer (hand-built expectations, or the state of the same
topics processed without the fault; see test_worker_exactly_once for why top-K trimming is
off in those comparisons).

The restart tests run on a Kafka + Redis of this module alone (``fault_stack``): restarting
the session's shared test stack would break concurrent test runs on the machine. The server's
own Redis outage behaviour (fallback stages, budgets, recovery) is tested in detail in
tests/integration/test_serving_faults.py; here a server only rides along a worker's restart.

No test asserts a rate, a latency or a duration (a loaded machine makes any such bound flaky):
each phase of a fault waits for a condition (events applied, a retry logged, the broker back)
with a generous deadline, and the checks are counts and exact state.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import orjson
import pytest
from redis.asyncio import Redis

from core.settings import Settings
from messaging.producer import EventProducer, ProducerConfig, RateLimiter
from schemas import recommender_pb2 as pb
from schemas import recommender_pb2_grpc as pb_grpc
from schemas.keyspace import Keyspace
from schemas.topics import Topic
from streamrec.bench.serve import BenchConfig, populate
from streamrec.stack.local import LocalStack
from tests.conftest import Services
from tests.integration.serving_support import (
    ctx,
    recommender,
    running,
    seed,
    serving_settings,
)
from tests.reliability.fault_support import (
    UNTRIMMED,
    WAIT_S,
    ServeProcess,
    applied_count,
    log_size,
    log_text,
    recent_items,
    settings_on,
    stream,
    wait_log,
    wait_progress,
)
from tests.support import delete_prefix_keys, private_stack_for
from tests.worker_support import (
    assert_same_state,
    consume_all,
    dump_state,
    outcome,
    produce,
    start_worker,
    stop_worker,
    wait_applied,
)

N_EVENTS = 12_000
RPC_TIMEOUT_S = 30.0  # a deadline for calls that must succeed, not a latency bound


@pytest.fixture(scope="module")
def fault_stack(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    """A Kafka + Redis of this module alone, free to be stopped and restarted."""
    with private_stack_for(tmp_path_factory.mktemp("faults"), services.kafka_libs_dir) as stack:
        yield stack


@pytest.fixture
async def fault_settings(fault_stack: LocalStack) -> AsyncIterator[Settings]:
    async with settings_on(fault_stack) as own:
        yield own


@pytest.fixture
async def fault_redis(fault_stack: LocalStack) -> AsyncIterator[Redis]:
    client = Redis.from_url(
        fault_stack.settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0
    )
    try:
        yield client
    finally:
        await client.aclose()


async def _start_redis(stack: LocalStack, redis: Redis) -> None:
    """Start Redis again; drop the test client's pooled connections to the old process."""
    await asyncio.to_thread(stack.start_redis)
    await redis.connection_pool.disconnect()


def _fresh_users(
    tag: str, n: int, ts: float
) -> tuple[list[tuple[bytes, bytes]], dict[str, list[str]]]:
    """``n`` new users, one view each: the messages and each user's expected recent items."""
    messages, expected = [], {}
    for i in range(n):
        user = f"{tag}{i}"
        messages.append((user.encode(), outcome(user, f"i{i % 50}", ts + i * 1e-3)))
        expected[user] = [f"i{i % 50}"]
    return messages, expected


async def _processed_state(
    settings: Settings, redis: Redis, tmp_path: Path, name: str, *, key_prefix: str | None = None
) -> dict[str, object]:
    """Process the topics from the start with a new consumer group; return the final state.

    Under ``key_prefix`` (kept), or by default under a throwaway prefix of its own: the
    same topics processed without a fault, the reference the faulted state must equal.
    """
    prefix = key_prefix or f"{settings.key_prefix}{name}"
    own = settings.model_copy(update={"key_prefix": prefix})
    worker = start_worker(
        own, tmp_path / f"{name}.log", group=f"{settings.topic_prefix}-{name}", **UNTRIMMED
    )
    try:
        await wait_applied(own, redis, procs=[worker])
    finally:
        await asyncio.to_thread(stop_worker, worker)
    state = await dump_state(redis, prefix)
    if key_prefix is None:
        await delete_prefix_keys(own.redis_url, prefix)
    return state


# --- a. Redis restart under load ----------------------------------------------------------


@pytest.mark.slow
async def test_redis_restart_without_persistence_worker_resumes_and_replay_rebuilds(
    fault_stack: LocalStack, fault_settings: Settings, fault_redis: Redis, tmp_path: Path
) -> None:
    settings, redis = fault_settings, fault_redis
    keys = Keyspace(settings.key_prefix)
    await produce(settings, Topic.OUTCOMES, stream(N_EVENTS, seed=21))
    worker = start_worker(settings, tmp_path / "w1.log", **UNTRIMMED)
    now = time.time()
    try:
        await wait_progress(redis, keys, N_EVENTS // 3, worker)
        cfg = serving_settings(settings, tmp_path)
        async with running(cfg, log_exposures=False) as (_server, channel):
            stub = recommender(channel)
            request = pb.RecommendRequest(user_id="u1", k=5)
            assert not (await stub.Recommend(request, timeout=RPC_TIMEOUT_S)).degraded

            log_before = log_size(tmp_path / "w1.log")
            await asyncio.to_thread(fault_stack.stop_redis)
            # the worker retries its batch (not acked) while Redis is away; the server falls
            # back to its in-process caches and still answers
            during, expected = _fresh_users("gap", 200, now)
            await produce(settings, Topic.OUTCOMES, during)
            for _ in range(5):
                reply = await stub.Recommend(request, timeout=RPC_TIMEOUT_S)
                assert reply.degraded and reply.items
                assert reply.fallback_stage != pb.FALLBACK_STAGE_NONE
                await asyncio.sleep(0.2)
            # Redis comes back only once the worker has met its absence (however long that
            # takes on this machine), so a retry is part of every run
            await wait_log(tmp_path / "w1.log", "retrying", worker, after=log_before)
            assert worker.poll() is None, "worker died while Redis was away"
            await _start_redis(fault_stack, redis)

            after, more = _fresh_users("post", 200, now + 1)
            expected.update(more)
            # a pair so that a fresh user gets a personalised answer from post-restart state
            pairs = [
                (f"pair{i}".encode(), outcome(f"pair{i}", item, now + 2 + j))
                for i in range(5)
                for j, item in enumerate(("anchor", "neighbour"))
            ]
            probe = [(b"probe", outcome("probe", "anchor", now + 10))]
            await produce(settings, Topic.OUTCOMES, after + pairs + probe)
            await wait_applied(settings, redis, procs=[worker])
            assert worker.poll() is None

            # everything not applied before the restart is applied after it, exactly once
            assert await recent_items(redis, keys, list(expected)) == expected

            async def personalised() -> pb.RecommendResponse | None:
                reply = await stub.Recommend(
                    pb.RecommendRequest(user_id="probe", k=3), timeout=RPC_TIMEOUT_S
                )
                reasons = [r for item in reply.items for r in item.reasons]
                return reply if "co-viewed with anchor" in reasons else None

            # the server reconnects on its own schedule: wait for the answer, not for a time
            deadline = time.monotonic() + WAIT_S
            while (answer := await personalised()) is None:
                assert time.monotonic() < deadline, "no personalised answer after the restart"
                await asyncio.sleep(0.1)
            assert not answer.degraded and answer.items[0].item_id == "neighbour"
    finally:
        stop_worker(worker)

    # Persistence off: what was written before the restart is gone. The contract is that a
    # replay of the retained topics from the start rebuilds it: flush the prefix, new group.
    await delete_prefix_keys(settings.redis_url, settings.key_prefix)
    async with asyncio.TaskGroup() as both:
        rebuilt = both.create_task(
            _processed_state(settings, redis, tmp_path, "replay", key_prefix=settings.key_prefix)
        )
        reference = both.create_task(_processed_state(settings, redis, tmp_path, "ref"))
    assert_same_state(rebuilt.result(), reference.result())


@pytest.mark.slow
async def test_redis_restart_with_aof_state_is_exact_without_replay(
    fault_stack: LocalStack, fault_settings: Settings, fault_redis: Redis, tmp_path: Path
) -> None:
    settings, redis = fault_settings, fault_redis
    keys = Keyspace(settings.key_prefix)
    await asyncio.to_thread(fault_stack.stop_redis)
    fault_stack.redis_persistence = True  # appendonly yes, appendfsync always
    await _start_redis(fault_stack, redis)
    try:
        await produce(settings, Topic.OUTCOMES, stream(N_EVENTS, seed=22))
        worker = start_worker(settings, tmp_path / "w.log", **UNTRIMMED)
        try:
            # at least a third applied before the kill; how much more depends on the machine
            await wait_progress(redis, keys, N_EVENTS // 3, worker)
            log_before = log_size(tmp_path / "w.log")
            # SIGKILL: no shutdown save; only what the AOF fsynced before each reply survives
            await asyncio.to_thread(fault_stack.stop_redis, graceful=False)
            # more of the stream arrives while Redis is away: in flight at the restart whatever
            # the worker had done before, and it meets the absence (a retry) before Redis is back
            await produce(settings, Topic.OUTCOMES, stream(2000, seed=23, first=N_EVENTS))
            await wait_log(tmp_path / "w.log", "retrying", worker, after=log_before)
            assert worker.poll() is None, "worker died while Redis was away"
            await _start_redis(fault_stack, redis)
            assert await redis.hlen(keys.offsets) > 0, "the AOF did not bring the state back"
            await wait_applied(settings, redis, procs=[worker])
        finally:
            stop_worker(worker)
        faulted = await dump_state(redis, settings.key_prefix)
        assert_same_state(faulted, await _processed_state(settings, redis, tmp_path, "ref"))
    finally:
        await asyncio.to_thread(fault_stack.stop_redis)
        fault_stack.redis_persistence = False
        await _start_redis(fault_stack, redis)


# --- b. Kafka broker restart under load ---------------------------------------------------

KAFKA_EVENTS = 8000
KAFKA_RATE = 500.0
KAFKA_BEFORE, KAFKA_DURING = 3000, 3000  # events before the stop, from the stop on; rest after


async def _produce_around_restart(
    settings: Settings, ts: float, flushed: asyncio.Event, down: asyncio.Event, up: asyncio.Event
) -> tuple[int, int]:
    """One new user per event, paced at KAFKA_RATE/s, in three parts gated by the broker.

    The first part is delivered before ``flushed`` is set; the second starts once the broker
    is ``down`` (its sends queue, or wait for room, until the broker is back); the third once
    it is ``up`` again. Returns how many sends began while the broker was down, and how many
    events were delivered.
    """
    limiter = RateLimiter(KAFKA_RATE)
    began_while_down = 0
    async with EventProducer(settings, ProducerConfig(linger_ms=5)) as producer:

        async def send(i: int) -> None:
            await limiter.acquire()
            user = f"k{i}"
            await producer.send_raw(
                Topic.OUTCOMES, outcome(user, f"i{i % 100}", ts + i * 1e-3), user.encode()
            )

        for i in range(KAFKA_BEFORE):
            await send(i)
        await producer.flush()
        flushed.set()
        await down.wait()
        for i in range(KAFKA_BEFORE, KAFKA_BEFORE + KAFKA_DURING):
            began_while_down += not up.is_set()
            await send(i)
        await up.wait()
        for i in range(KAFKA_BEFORE + KAFKA_DURING, KAFKA_EVENTS):
            await send(i)
        await producer.flush()
        return began_while_down, producer.delivered


async def _until(event: asyncio.Event, task: asyncio.Task[object]) -> None:
    """Wait for ``event``; if ``task`` ends first, its error is the one to report."""
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiting, task}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if task.done():
        task.result()
    assert event.is_set(), f"not reached within {WAIT_S:g} s"


@pytest.mark.slow
async def test_kafka_restart_under_load_every_event_applied_once(
    fault_stack: LocalStack, fault_redis: Redis, tmp_path: Path
) -> None:
    redis = fault_redis
    # the producer's timeouts (3 × network_timeout_s) must outlast the broker's absence,
    # restart included, however slow the machine: 90 s
    async with settings_on(fault_stack, network_timeout_s=30.0) as settings:
        keys = Keyspace(settings.key_prefix)
        ts = time.time() - 60
        worker = start_worker(settings, tmp_path / "w.log")
        producing: asyncio.Task[tuple[int, int]] | None = None
        try:
            await produce(settings, Topic.OUTCOMES, [(b"warm", outcome("warm", "i0", ts))])
            await wait_applied(settings, redis, procs=[worker])  # worker is up
            flushed, down, up = asyncio.Event(), asyncio.Event(), asyncio.Event()
            producing = asyncio.create_task(
                _produce_around_restart(settings, ts, flushed, down, up)
            )
            await _until(flushed, producing)  # the first part is delivered
            await wait_progress(redis, keys, KAFKA_EVENTS // 8, worker)
            await asyncio.to_thread(fault_stack.stop_kafka)
            down.set()
            await asyncio.sleep(1.0)  # the stream goes on against the absent broker
            assert worker.poll() is None, "worker died while Kafka was away"
            await asyncio.to_thread(fault_stack.start_kafka)
            up.set()
            began_while_down, delivered = await asyncio.wait_for(producing, WAIT_S)
            # the stream ran before, during and after the broker's absence (by construction:
            # how much of the second part queued before the restart depends on the machine),
            # and all of it was delivered
            assert began_while_down > 0
            assert delivered == KAFKA_EVENTS
            await wait_applied(settings, redis, procs=[worker])
        finally:
            if producing is not None and not producing.done():
                producing.cancel()
                with contextlib.suppress(BaseException):
                    await producing
            await asyncio.to_thread(stop_worker, worker)
        users = ["warm", *(f"k{i}" for i in range(KAFKA_EVENTS))]
        expected = {"warm": ["i0"], **{f"k{i}": [f"i{i % 100}"] for i in range(KAFKA_EVENTS)}}
        # each produced event is applied, and applied once (a second copy would be a 2nd entry)
        assert await recent_items(redis, keys, users) == expected
        assert await applied_count(redis, keys) == KAFKA_EVENTS + 1


# --- c. Request burst on a real server ----------------------------------------------------

BURST_USERS = 500
BASE_CONCURRENCY = 4
BURST_FACTOR = 10
NORMAL_CALLS = 2000
BURST_CALLS = 6000


async def _drive(
    stub: pb_grpc.RecommenderAsyncStub, concurrency: int, calls: int
) -> tuple[list[float], list[str]]:
    """``concurrency`` closed-loop callers making ``calls`` calls in all (however long it takes).

    Returns each call's latency (s), a figure to report, and the failures (status name, or
    "empty").
    """
    latencies: list[float] = []
    failures: list[str] = []
    issued = 0

    async def caller(index: int) -> None:
        nonlocal issued
        while issued < calls:
            issued += 1
            user = f"u{(index * 7919 + issued) % BURST_USERS}"
            request = pb.RecommendRequest(
                user_id=user, k=10, context=pb.Context(tenant="t0", surface="home")
            )
            started = time.perf_counter()
            try:
                reply = await stub.Recommend(request, timeout=RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                failures.append(exc.code().name)
                continue
            finally:
                latencies.append(time.perf_counter() - started)
            if not reply.items:
                failures.append("empty")

    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return latencies, failures


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_request_burst_all_answered_and_server_healthy_after(
    settings: Settings, redis: Redis, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    await populate(
        redis,
        Keyspace(settings.key_prefix),
        BenchConfig(items=2000, users=BURST_USERS),
        time.time(),
    )
    server = ServeProcess(settings, tmp_path)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.addr) as channel:
            stub = recommender(channel)
            await _drive(stub, BASE_CONCURRENCY, 200)  # warm-up
            normal, normal_failures = await _drive(stub, BASE_CONCURRENCY, NORMAL_CALLS)
            assert normal_failures == []
            # ten times the callers: every call answered, with items. The latencies are
            # recorded as figures, not checked: on a shared machine they measure its load.
            burst, burst_failures = await _drive(stub, BASE_CONCURRENCY * BURST_FACTOR, BURST_CALLS)
            assert burst_failures == []
            assert len(normal) == NORMAL_CALLS and len(burst) == BURST_CALLS
            figures = {
                "normal_p50_ms": _pct(normal, 0.50) * 1000,
                "normal_p99_ms": _pct(normal, 0.99) * 1000,
                "burst_p50_ms": _pct(burst, 0.50) * 1000,
                "burst_p99_ms": _pct(burst, 0.99) * 1000,
            }
            for name, value in figures.items():
                record_property(name, value)
            print(" ".join(f"{k}={v:.1f}" for k, v in figures.items()))
            # still up and healthy, and still answering
            assert server.alive()
            await server.wait_healthy()
            after, after_failures = await _drive(stub, 1, 20)
            assert after_failures == [] and len(after) == 20
    finally:
        server.stop()


# --- d. Garbage on every input ------------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes, length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return size.to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _wire_garbage(rng: random.Random) -> list[bytes]:
    """Byte streams a broken or hostile client might send to the gRPC port."""
    noise = rng.randbytes
    return [
        b"",  # connect and close
        noise(65536),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        H2_PREFACE + noise(4096),
        H2_PREFACE + _frame(4, 0, 0, noise(5)),  # SETTINGS with a length not a multiple of 6
        H2_PREFACE + _frame(4, 0, 0, b"") + _frame(1, 4, 1, noise(200)),  # HEADERS, bad HPACK
        H2_PREFACE + _frame(4, 0, 0, b"") + _frame(0, 0, 1, noise(64)),  # DATA on idle stream
        H2_PREFACE + _frame(0, 0, 1, b"", length=0xFFFFFF),  # 16 MB frame announced, none sent
        H2_PREFACE + _frame(4, 0, 0, b"") + _frame(8, 0, 0, b"\x7f\xff\xff\xff"),  # window ovf
        H2_PREFACE + b"".join(_frame(6, 0, 0, noise(8)) for _ in range(200)),  # PING flood
    ]


async def _send_raw(addr: str, data: bytes) -> None:
    host, _, port = addr.rpartition(":")
    async with asyncio.timeout(RPC_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(data)
            await writer.drain()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(reader.read(65536), 0.2)  # whatever the server says
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_garbage_to_the_grpc_port_leaves_the_server_answering(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    world = await seed(redis, Keyspace(settings.key_prefix))
    valid = pb.RecommendRequest(user_id="u1", k=3, context=ctx(world))
    server = ServeProcess(settings, tmp_path)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.addr) as channel:
            before = await recommender(channel).Recommend(valid, timeout=RPC_TIMEOUT_S)
        assert not before.degraded and before.items[0].item_id == "b"
        rng = random.Random(5)
        for data in _wire_garbage(rng):
            await _send_raw(server.addr, data)
        async with grpc.aio.insecure_channel(server.addr) as channel:
            raw_call = channel.unary_unary(
                "/streamrec.v1.Recommender/Recommend",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            undecodable = [
                b"\xff\xff\xff\xff\xff",  # not a protobuf
                b"\x0a\xff\xff\xff\xff\x0f",  # a string field longer than the message
                b"\x0a\x02\xff\xfe",  # user_id that is not UTF-8
            ]
            for payload in undecodable:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await raw_call(payload, timeout=RPC_TIMEOUT_S)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, payload
                assert "malformed request" in str(info.value.details())
            for _ in range(20):  # random bytes: undecodable, or decodable into nonsense
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await raw_call(rng.randbytes(rng.randrange(1, 2000)), timeout=RPC_TIMEOUT_S)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw_call(rng.randbytes(5 * 1024 * 1024), timeout=RPC_TIMEOUT_S)  # over 4 MB
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            unknown = channel.unary_unary(
                "/streamrec.v1.Recommender/NoSuchMethod",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await unknown(b"", timeout=RPC_TIMEOUT_S)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

            reply = await recommender(channel).Recommend(valid, timeout=RPC_TIMEOUT_S)
            assert not reply.degraded
            assert [i.item_id for i in reply.items] == [i.item_id for i in before.items]
        assert server.alive()
        await server.wait_healthy()
    finally:
        server.stop()
    assert "Traceback" not in log_text(server.log)


def _bad_messages(rng: random.Random) -> dict[Topic, list[tuple[bytes | None, bytes]]]:
    """Garbage per topic: random bytes, huge, empty, null key, JSON that is no event.

    No null key on the items topic: it is compacted, and the broker itself refuses keyless
    messages there.
    """
    noise = rng.randbytes
    common: list[tuple[bytes | None, bytes]] = [
        *((f"g{i}".encode(), noise(rng.randrange(16, 400))) for i in range(5)),
        *((None, noise(rng.randrange(16, 400))) for _ in range(3)),
        (b"g-huge", noise(1024 * 1024)),
        (b"g-empty", b""),
        (b"g-json", b"[1, 2, 3]"),
        (b"g-null", b'{"user_id": null, "item_id": null, "ts": null}'),
        (b"g-nul-bytes", b"\x00" * 100),
    ]
    keyless: list[tuple[bytes | None, bytes]] = [(None, b""), (None, b"{}")]
    return {
        Topic.OUTCOMES: common + keyless,
        Topic.EXPOSURES: common + keyless,
        Topic.ITEMS: [(k or b"g-keyed", v) for k, v in common],
    }


async def test_garbage_messages_go_to_the_dead_letter_topic_and_valid_ones_are_applied(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    keys = Keyspace(settings.key_prefix)
    bad = _bad_messages(random.Random(9))
    now = time.time()
    worker = start_worker(settings, tmp_path / "w.log")
    try:
        for topic, messages in bad.items():
            await produce(settings, topic, messages, max_request_size=4 * 1024 * 1024)
        good = [(f"ok{i}".encode(), outcome(f"ok{i}", f"i{i}", now - 30 + i)) for i in range(50)]
        await produce(settings, Topic.OUTCOMES, good)
        item = orjson.dumps({"item_id": "i1", "categories": ["shoes"], "ts": now - 30})
        await produce(settings, Topic.ITEMS, [(b"i1", item)])
        await wait_applied(
            settings, redis, (Topic.OUTCOMES, Topic.EXPOSURES, Topic.ITEMS), procs=[worker]
        )
        assert worker.poll() is None
    finally:
        await asyncio.to_thread(stop_worker, worker)

    assert await recent_items(redis, keys, [f"ok{i}" for i in range(50)]) == {
        f"ok{i}": [f"i{i}"] for i in range(50)
    }
    assert await redis.hget(keys.item_categories, "i1") == b"shoes"
    letters = [orjson.loads(raw) for raw in await consume_all(settings, Topic.DEADLETTER)]
    limit = settings.max_event_bytes
    got = sorted((d["source_topic"], base64.b64decode(d["raw_b64"])) for d in letters)
    expected = sorted(
        (settings.topic(topic.value), value[:limit])
        for topic, messages in bad.items()
        for _, value in messages
    )
    assert got == expected  # every bad message once, with its bytes (huge ones cut)
    assert {d["truncated"] for d in letters if len(base64.b64decode(d["raw_b64"])) == limit} == {
        True
    }
    assert all(d["partition"] >= 0 and d["offset"] >= 0 for d in letters)
