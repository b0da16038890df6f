"""The worker's group consumer reads committed records only (streams.faust_tuning).

faust builds it read-uncommitted unless faust's own exactly-once mode is on; the worker
must not apply the records of an aborted transaction (a replay attempt sent again, see
messaging.replay), so its consumer thread sets the level itself. This pins that it still
reaches the aiokafka consumer faust creates (a faust or aiokafka upgrade that moves it
fails here).
"""

from __future__ import annotations

from typing import Any

from core.settings import load_settings
from streams.app import create_app
from streams.faust_tuning import ReadCommittedConsumerThread


async def test_the_worker_consumer_reads_committed_records_only() -> None:
    app = create_app(load_settings(worker_metrics_port=0))
    thread: Any = getattr(app.consumer, "_thread")  # noqa: B009 -- faust's private part
    assert isinstance(thread, ReadCommittedConsumerThread)
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert consumer._isolation_level == "read_committed"
        assert consumer._group_id == app.conf.id  # faust's own settings are kept
    finally:
        await consumer.stop()
