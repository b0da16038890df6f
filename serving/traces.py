"""Decision traces: what each answer served, to whom and why, kept in Redis for a while.

``TraceLog.log()`` is synchronous and O(1) (the request path calls it next to the exposure
log); a background task builds :class:`~schemas.controls.DecisionTrace` documents and writes
them in batches with one Lua script per batch: ``SET P:tr:r:{rid} EX retention``, the request id
into the index ``P:tr:i`` (score = ts) and into the user's set ``P:tr:u:{user}`` (for erasure).
The same script drops index entries older than the retention and, past ``trace_max``, the oldest
traces (keys deleted): Redis memory stays below about ``trace_max`` × the bytes of one trace
(1,640 B at k = 10 with two reasons per item, ``MEMORY USAGE``, plus ≈ 0.1 KB of index
entries; tests/integration/test_trace_log.py). A full buffer drops its oldest
trace; a batch Redis refuses is dropped (traces are best effort) — both counted in
``streamrec_serving_traces_dropped_total`` and logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from redis.exceptions import RedisError

from core.settings import Settings
from schemas.controls import DecisionTrace, TracedItem
from schemas.keyspace import Keyspace
from serving import metrics
from serving.exposure_log import ANONYMOUS, PendingExposure

log = logging.getLogger("streamrec.serving.traces")
BATCH_MAX = 500

# KEYS[1] = index zset. ARGV: ttl, cap, cutoff ts, trace key prefix, then per trace
# request id, ts, trace key, document, user's trace-set key.
_WRITE = """
local idx = KEYS[1]
local ttl, cap, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
for i = 5, #ARGV, 5 do
  local rid, ts, tkey, doc, ukey = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  redis.call('SET', tkey, doc, 'EX', ttl)
  redis.call('ZADD', idx, ts, rid)
  redis.call('SADD', ukey, rid)
  redis.call('EXPIRE', ukey, ttl)
end
redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. ARGV[3])
local over = redis.call('ZCARD', idx) - cap
if over > 0 then
  local old = redis.call('ZPOPMIN', idx, over)
  for j = 1, #old, 2 do redis.call('UNLINK', prefix .. old[j]) end
  return over
end
return 0
"""


def build_trace(p: PendingExposure) -> DecisionTrace:
    """The decision trace of one answer (same facts as its exposure event)."""
    hits, active = p.rule_hits()
    reasons = p.reasons if len(p.reasons) == len(p.items) else [()] * len(p.items)
    return DecisionTrace(
        request_id=p.request_id,
        user_id=p.user_id or p.session_id or ANONYMOUS,
        ts=p.ts,
        method=p.method,
        variant=p.variant,
        algo_version=p.algo_version,
        stage=p.stage,
        tenant=p.context.tenant,
        surface=p.context.surface,
        locale=p.context.locale,
        items=[
            TracedItem(item_id=item, rank=rank, score=score, reasons=list(why), rules=hit)
            for rank, ((item, score), why, hit) in enumerate(
                zip(p.items, reasons, hits, strict=True), start=1
            )
        ],
        rules=active,
        flags=sorted(p.flags()),
    )


class TraceLog:
    """Bounded buffer + background writer of decision traces."""

    def __init__(
        self,
        redis: Any,
        keys: Keyspace,
        *,
        retention_s: int,
        max_traces: int,
        capacity: int,
        timeout_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s
        self.max_traces = max_traces
        self.capacity = capacity
        self.timeout_s = timeout_s
        self._script = redis.register_script(_WRITE)
        self._buffer: deque[PendingExposure] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.written = 0
        self.dropped = 0
        self.evicted = 0

    @classmethod
    def from_settings(cls, redis: Any, settings: Settings) -> TraceLog | None:
        """None when traces are off (``trace_retention_s = 0``)."""
        if settings.trace_retention_s <= 0:
            return None
        return cls(
            redis,
            Keyspace(settings.key_prefix),
            retention_s=settings.trace_retention_s,
            max_traces=settings.trace_max,
            capacity=settings.trace_buffer_size,
            timeout_s=settings.network_timeout_s,
        )

    def log(self, pending: PendingExposure) -> None:
        """Queue one trace; never blocks, never raises. Full buffer → oldest dropped."""
        if len(self._buffer) >= self.capacity:
            self._buffer.popleft()
            self._drop(1)
        self._buffer.append(pending)
        self._idle.clear()
        self._wake.set()

    def _drop(self, n: int) -> None:
        self.dropped += n
        metrics.TRACES_DROPPED.inc(n)

    async def start(self) -> None:
        """Start the writer task. Idempotent."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streamrec-traces")

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._buffer.popleft() for _ in range(min(BATCH_MAX, len(self._buffer)))]
            await self.write(batch)

    async def write(self, batch: list[PendingExposure]) -> None:
        """Write one batch (dropped and counted when Redis refuses it)."""
        now = time.time()
        args: list[str | int | float] = [
            self.retention_s,
            self.max_traces,
            repr(now - self.retention_s),
            self.keys.trace(""),
        ]
        for p in batch:
            doc = build_trace(p)
            args += [
                doc.request_id,
                repr(doc.ts),
                self.keys.trace(doc.request_id),
                doc.model_dump_json(),
                self.keys.user_traces(doc.user_id),
            ]
        try:
            async with asyncio.timeout(self.timeout_s):
                evicted = await self._script(keys=[self.keys.traces], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("cannot write decision traces (dropping them): %r", exc)
            self._failing = True
            self._drop(len(batch))
            return
        self._failing = False
        self.written += len(batch)
        self.evicted += int(evicted or 0)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Write what is buffered within ``grace_s``, then stop the task. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._buffer:
            self._drop(len(self._buffer))
            self._buffer.clear()
