"""faust, tuned for throughput without changing what it does.

Per-message costs of faust-streaming that the worker does not need to pay (each measured with
``streamrec bench ingest`` and py-spy; the bare baseline and the worker share all of them):

* :class:`LeanMonitor` — faust's default monitor sensor counts and times every message and
  event (four calls per event, each a few dict updates and clock reads). Nothing reads those
  statistics here: the worker exports its own Prometheus metrics (:mod:`monitoring.metrics`)
  and faust's web server is off. It keeps what faust itself reads (the partition's last
  stream inbound time, for the "partition not processed" warning; end and committed offsets).
* :class:`RawSchema` — the topics carry raw bytes; faust's schema still looks the ``raw``
  codec up and runs it (and a model-namespace check) for every key and value.
* :class:`EagerDeliveryConsumer` — faust's fetch loop hands each message to the topic
  conductor through ``Service.wait_first(deliver(message), suspend_flow.wait())``: four
  tasks and an ``asyncio.wait`` per message, so that a delivery blocked on a full stream
  buffer (or on suspended flow control) can be abandoned when a rebalance starts. A delivery
  almost never blocks, so this consumer starts it eagerly, in the fetch loop's own task (as
  Python 3.12's eager tasks do); only a delivery that actually suspends is continued as a
  task under the very same ``wait_first``. Same order, same interruptibility, same errors.
  Two smaller changes in the same loop: while partitions are held back because the stream
  buffer is under pressure, the others are polled with a short timeout (faust waits up to a
  second on partitions that have nothing, while the held-back ones are ready again), and it
  yields to the event loop every 10 messages instead of 100 (the worker's Redis replies
  wait less behind the fetch loop).

The fetch loop is a copy of faust-streaming 0.15's ``Consumer._drain_messages``; a unit test
(``tests/unit/test_faust_tuning.py``) fails when faust's original changes, so that an upgrade
re-checks the copy.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka

#: messages the fetch loop delivers between two yields to the event loop (faust: 100)
FETCH_YIELD_EVERY = 10
#: getmany timeout while some partitions are held back (stream buffer under pressure)
HELD_BACK_POLL_S = 0.02


class LeanMonitor(Monitor):
    """faust's :class:`~faust.sensors.Monitor` without its per-event statistics."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.stream_inbound_time[tp] = time.monotonic()

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class RawSchema(faust.Schema[Any, Any]):
    """Keys and values as consumed: the bytes the ``raw`` codec would return, per message
    without faust's codec registry lookup, codec call and model-namespace check."""

    def loads_key(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> Any:
        return message.key

    def loads_value(
        self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None
    ) -> Any:
        return message.value


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Drive ``coro`` on from the point where it suspended, yielding ``pending`` (PEP 380)."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 -- cancellation and all: to the coroutine
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _continued(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _resume(coro, pending)


class ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's consumer thread whose group consumer reads committed records only.

    faust reads ``read_committed`` only under its own exactly-once guarantee; the worker is
    at-least-once but must not see the records of an aborted transaction either (a replay
    attempt that failed and was sent again, see ``messaging.replay``). aiokafka hands the
    isolation level to its fetcher when the consumer starts.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer


class EagerDeliveryConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer whose fetch loop delivers each message eagerly (and reads
    committed records only: :class:`ReadCommittedConsumerThread`)."""

    def _new_consumer_thread(self) -> Any:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        # faust.transport.consumer.Consumer._drain_messages (faust-streaming 0.15), with
        # the three changes marked below.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = FETCH_YIELD_EVERY  # --- change 3 (faust: 100)
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                # --- change 1: while partitions are held back for a full stream buffer,
                # poll the others briefly, so the held-back ones resume when it drains.
                timeout = HELD_BACK_POLL_S if self._buffered_partitions else 1.0
                ait = cast(AsyncIterator[Any], getmany(timeout=timeout))

                # Sleeping because sometimes getmany is called in a loop
                # never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            # --- change 2: start the delivery in this task; only if it
                            # suspends, continue it under faust's wait_first as before.
                            delivery = cast(Coroutine[Any, Any, Any], callback(message))
                            try:
                                pending = delivery.send(None)
                            except StopIteration:
                                pass
                            else:
                                await self.wait_first(
                                    _continued(delivery, pending), self.suspend_flow.wait()
                                )
                            # --- end of change 2
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class EagerDeliveryTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`EagerDeliveryConsumer`."""

    Consumer = EagerDeliveryConsumer
