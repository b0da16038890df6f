"""Redis gateway of the worker: reads the state a batch needs, applies a plan atomically.

Two round trips per batch, whatever its size: one pipelined read (recent items of the batch's
users, categories of its items, stored offsets, the decay landmark) and one ``EVALSHA`` of
``apply_batch.lua`` that applies the whole :class:`~streams.processor.BatchPlan` together with
the processed offsets. :class:`StateStore` counts its round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from redis.exceptions import RedisError as _RedisError

from core.errors import UnavailableError
from core.retry import retry
from schemas.keyspace import Keyspace, parse_recent
from streams.processor import BatchPlan

#: the apply scripts by name (setting ``apply_script``): ``baseline`` is the script before the
#: issue 22 CPU work, kept for ``streamrec bench ingest``'s side-by-side figure
SCRIPTS = {
    name: resources.files("streams").joinpath(file).read_text(encoding="utf-8")
    for name, file in (("current", "apply_batch.lua"), ("baseline", "apply_batch_baseline.lua"))
}


@dataclass(frozen=True, slots=True)
class ReadState:
    """What the planner needs from Redis before planning a batch."""

    recent: dict[str, list[tuple[float, str]]]
    categories: dict[str, list[str]]
    offsets: dict[str, int]
    t0: float | None


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """Outcome of one apply: ``conflict`` names the offset field that was already applied."""

    applied: bool
    joined: int = 0
    pending: int = 0
    conflict_field: str | None = None
    conflict_offset: int | None = None


class StateStore:
    """Domain methods over one Redis connection pool for the worker and the evaluator."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keyspace,
        *,
        timeout_s: float = 5.0,
        script: str = "current",
    ) -> None:
        self.client = client
        self.keys = keys
        self.timeout_s = timeout_s
        self.script = SCRIPTS[script]
        self.roundtrips = 0
        self._sha: str | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        keys: Keyspace,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        script: str = "current",
    ) -> StateStore:
        """Connect, PING with bounded retries, load the apply script (``SCRIPTS`` name)."""
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        store = cls(client, keys, timeout_s=timeout_s, script=script)

        async def ping_and_load() -> None:
            async with asyncio.timeout(timeout_s):
                await client.ping()
                store._sha = await client.script_load(store.script)

        failures = (TimeoutError, OSError, _RedisError)
        try:
            await retry(
                ping_and_load, what="connect to Redis", attempts=attempts, retry_on=failures
            )
        except failures as exc:
            await client.aclose()
            raise UnavailableError(f"Redis at {url} did not answer: {exc}") from exc
        return store

    async def aclose(self) -> None:
        await self.client.aclose()

    async def read(
        self, users: Iterable[str], items: Iterable[str], offset_fields: Sequence[str], depth: int
    ) -> ReadState:
        """One pipelined round trip: recent lists, item categories, offsets, landmark."""
        users = list(dict.fromkeys(users))
        items = list(dict.fromkeys(items))
        keys = self.keys
        async with asyncio.timeout(self.timeout_s):
            # MULTI/EXEC: the histories and the stored offsets must be one consistent snapshot.
            # Read apart, another worker's apply (a rebalance overlap) could land in between:
            # offsets that already cover events the histories do not show yet, and the guard
            # in the apply script would then pass a plan made from a stale history.
            pipe = self.client.pipeline(transaction=True)
            for user in users:
                pipe.lrange(keys.user_recent(user), 0, depth - 1)
            if items:
                pipe.hmget(keys.item_categories, items)
            if offset_fields:
                pipe.hmget(keys.offsets, list(offset_fields))
            pipe.hget(keys.meta, "t0")
            replies: list[Any] = await pipe.execute()
        self.roundtrips += 1
        recent = {user: parse_recent(replies[i]) for i, user in enumerate(users)}
        pos = len(users)
        categories: dict[str, list[str]] = {}
        if items:
            for item, raw in zip(items, replies[pos], strict=True):
                if raw:
                    categories[item] = raw.decode().split(",")
            pos += 1
        offsets: dict[str, int] = {}
        if offset_fields:
            for name, raw in zip(offset_fields, replies[pos], strict=True):
                if raw is not None:
                    offsets[name] = int(raw)
            pos += 1
        t0_raw = replies[pos]
        return ReadState(recent, categories, offsets, float(t0_raw) if t0_raw else None)

    async def apply(self, plan: BatchPlan, *, now: float) -> ApplyResult:
        """Apply a plan in one atomic EVALSHA (reloading the script once if Redis lost it)."""
        payload = orjson.dumps(encode_plan(plan, self.keys, now=now))
        keys = [self.keys.offsets, self.keys.meta]
        async with asyncio.timeout(self.timeout_s):
            try:
                assert self._sha is not None
                reply = await self.client.evalsha(self._sha, 2, *keys, payload)
            except NoScriptError:
                self._sha = await self.client.script_load(self.script)
                reply = await self.client.evalsha(self._sha, 2, *keys, payload)
        self.roundtrips += 1
        status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if status == "conflict":
            name = reply[1].decode()
            stored = reply[2].decode()
            return ApplyResult(False, conflict_field=name, conflict_offset=_int_or_none(stored))
        return ApplyResult(True, joined=int(reply[1]), pending=int(reply[2]))

    async def delete_prefix(self) -> int:
        """Delete every key of this store's prefix (throwaway prefixes, tests)."""
        deleted = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=self.keys.pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self.client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.client.unlink(*batch)
        return deleted


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _flat(mapping: dict[str, float] | dict[str, str]) -> list[Any]:
    out: list[Any] = []
    for key, value in mapping.items():
        out.append(key)
        out.append(value)
    return out


def encode_plan(plan: BatchPlan, keys: Keyspace, *, now: float) -> dict[str, Any]:
    """The JSON document ``apply_batch.lua`` expects (see the script's header)."""
    doc: dict[str, Any] = {
        "t0": repr(plan.t0),
        "now": f"{now:.3f}",
        "newest": f"{plan.newest_ts:.3f}",
        "g": [[name, str(first), str(last)] for name, (first, last) in plan.offsets.items()],
        "z": [[key, _flat(inc), plan.ztrim.get(key, 0)] for key, inc in plan.zincr.items()],
        "zs": [[key, _flat(val), plan.zset_cap.get(key, 0)] for key, val in plan.zset.items()],
        "sn": [[key, _flat(val)] for key, val in plan.sn.items()],
        "snk": plan.session_index_max,
        "hot": plan.hot_row_pairs,
        "sno": plan.session_index_over,
        "hf": [[key, _flat(inc), plan.hincr_cap.get(key, 0)] for key, inc in plan.hincr.items()],
        "lp": [[key, entries, plan.lpush_cap[key]] for key, entries in plan.lpush.items()],
        "hs": [[key, _flat(fields)] for key, fields in plan.hset.items() if fields],
        "ex": [[key, ttl] for key, ttl in plan.expire.items()],
    }
    if plan.segments:
        seg_items: list[Any] = []
        for seg, ts in plan.segments.items():
            seg_items += [seg, f"{ts:.3f}"]
        # the per-segment popularity key is the template with the segment appended
        doc["seg"] = {
            "key": keys.segments,
            "max": plan.segments_max,
            "pop_prefix": keys.popularity(""),
            "items": seg_items,
        }
    if plan.item_categories:
        doc["cat"] = {
            "key": keys.item_categories,
            "na": keys.unavailable_items,
            "ver": keys.catalog_version,
            "items": [
                [item, cats, 1 if plan.item_available[item] else 0, plan.item_ts.get(item, 0.0)]
                for item, cats in plan.item_categories.items()
            ],
            # new-item pool (exploration): first announcements join, bounded by age and size
            "new": keys.new_items,
            "new_max": plan.new_items_max,
            "new_age": plan.new_items_max_age_s,
        }
    if plan.exposures or plan.joins:
        xp: list[Any] = []
        for rid, sv, items in plan.exposures:
            flat: list[Any] = []
            for item, rank in items:
                flat += [item, rank]
            xp.append([keys.exposure(rid), keys.early_outcomes(rid), sv, flat])
        doc["x"] = {
            "xp": xp,
            "jo": [
                [keys.exposure(rid), keys.early_outcomes(rid), item, etype]
                for rid, item, etype in plan.joins
            ],
            "imp": keys.item_impressions,
            "clk": keys.item_clicks,
            "sv": keys.surface_variant_ctr,
            "cap": plan.ctr_items_max,
            "ttl": plan.join_window_s,
        }
    return doc
