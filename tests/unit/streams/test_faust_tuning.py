"""streams.faust_tuning and the app's batch hand-over: same behaviour as stock faust, less work.

The eager delivery must behave like a task started on the delivery coroutine: a delivery that
never suspends completes inline; one that suspends is continued in a task, sees the results
of what it awaited, and can be cancelled at its await point. The raw schema must return what
faust's ``raw`` codec returns. The fetch loop is a copy of faust's: the copy is pinned to the
faust source it was taken from.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

import faust
import faust.transport.consumer as faust_consumer
import pytest

from streams.app import TakenEvents
from streams.faust_tuning import LeanMonitor, RawSchema, _continued

#: sha256 of faust-streaming 0.15.3's Consumer._drain_messages, the original of the copy in
#: EagerDeliveryConsumer._drain_messages
DRAIN_MESSAGES_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_fetch_loop_copy_matches_the_installed_faust() -> None:
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == DRAIN_MESSAGES_SHA256, (
        "faust's Consumer._drain_messages changed: carry the change over to "
        "streams.faust_tuning.EagerDeliveryConsumer._drain_messages, then update the hash"
    )


def _start(coro: Any) -> tuple[bool, Any]:
    """What the fetch loop does: run the delivery up to its first suspension."""
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, pending


async def test_a_delivery_that_does_not_suspend_completes_inline() -> None:
    log: list[str] = []

    async def deliver() -> str:
        log.append("delivered")
        return "done"

    done, value = _start(deliver())
    assert done and value == "done" and log == ["delivered"]


async def test_a_suspended_delivery_continues_in_a_task_with_what_it_awaited() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    log: list[str] = []

    async def deliver() -> str:
        log.append("start")
        await asyncio.sleep(0)  # a bare yield
        got = await gate  # a future
        log.append(got)
        return got.upper()

    coro = deliver()
    done, pending = _start(coro)
    assert not done and log == ["start"]
    task = asyncio.ensure_future(_continued(coro, pending))
    await asyncio.sleep(0.01)
    assert not task.done()
    gate.set_result("ok")
    assert await task == "OK"
    assert log == ["start", "ok"]


async def test_an_error_after_the_suspension_propagates() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def deliver() -> None:
        await gate
        raise ValueError("bad message")

    coro = deliver()
    _done, pending = _start(coro)
    task = asyncio.ensure_future(_continued(coro, pending))
    gate.set_result(None)
    with pytest.raises(ValueError, match="bad message"):
        await task


async def test_cancelling_the_continuation_cancels_the_delivery_where_it_waits() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    queue.put_nowait(1)  # full: the delivery blocks in put()
    log: list[str] = []

    async def deliver() -> None:
        try:
            await queue.put(2)
        finally:
            log.append("unwound")

    coro = deliver()
    done, pending = _start(coro)
    assert not done
    task = asyncio.ensure_future(_continued(coro, pending))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["unwound"]
    assert queue.qsize() == 1 and queue.get_nowait() == 1  # nothing was put


def test_raw_schema_returns_what_the_raw_codec_returns(tmp_path: Any) -> None:
    app = faust.App("test-raw-schema", autodiscover=False, datadir=str(tmp_path), web_enabled=False)
    stock: faust.Schema[Any, Any] = faust.Schema(key_serializer="raw", value_serializer="raw")
    raw = RawSchema(key_serializer="raw", value_serializer="raw")
    for key, value in [(b"k", b'{"a": 1}'), (None, b"\xff\x00"), (b"", None), (None, None)]:
        message = faust.types.Message(
            topic="t", partition=0, offset=0, timestamp=0.0, timestamp_type=0,
            headers=None, key=key, value=value, checksum=None,
        )  # fmt: skip
        assert raw.loads_key(app, message) == stock.loads_key(app, message) == key
        assert raw.loads_value(app, message) == stock.loads_value(app, message) == value


def test_lean_monitor_keeps_the_inbound_time_faust_reads() -> None:
    monitor = LeanMonitor()
    tp = faust.types.TP("t", 0)
    monitor.on_stream_event_in(tp, 5, object(), object())
    assert tp in monitor.stream_inbound_time
    assert monitor.events_total == 0  # the per-event statistics are not kept


async def test_taken_events_fifo_in_batches_and_at_most_a_batch_ahead() -> None:
    taken = TakenEvents(batch_size=3)
    await taken.put([1, 2])  # under a batch: returns at once
    putting = asyncio.ensure_future(taken.put([3, 4, 5]))  # now 5 waiting: put waits
    await asyncio.sleep(0)
    assert not putting.done()
    assert await taken.get() == [1, 2, 3]
    await asyncio.wait_for(putting, 10)  # 2 waiting again: the agent may go on
    assert await taken.get() == [4, 5]
    getting = asyncio.ensure_future(taken.get())  # nothing waiting: get waits
    await asyncio.sleep(0)
    assert not getting.done()
    await taken.put([6])
    assert await asyncio.wait_for(getting, 10) == [6]
