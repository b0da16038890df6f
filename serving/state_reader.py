"""Redis gateway of the server: domain reads, at most two round trips per request, counted.

Request path (``read_user`` then ``read_neighbours``, or ``read_similar`` alone):

* RT1 — pipeline: LRANGE recent (user or session), ZRANGE seen (users), and the segment's
  popularity top-N when the in-process cache does not hold that segment yet.
* RT2 — pipeline: ZREVRANGE covis(anchor) WITHSCORES for each anchor.

Shared state (popularity, rules, catalog, experiments, state age) is read by the background
refresher of :mod:`serving.shared_state` through ``read_shared`` and friends.

Every Redis error or timeout is counted (``streamrec_serving_redis_errors_total``), opens a
short circuit (requests skip Redis for ``retry_after_s``) and is raised as
:class:`~streamrec.errors.UnavailableError`, which the recommender turns into a fallback.
``deadline`` arguments are absolute event-loop times (``loop.time()``); None = no limit
beyond the client's socket timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from schemas.keyspace import Keyspace
from serving import metrics
from streamrec.errors import UnavailableError
from streamrec.settings import Settings
from streams.processor import parse_recent

T = TypeVar("T")
Pairs = list[tuple[str, float]]
SESSION_SEEN_MAX = 200


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(raw: Sequence[Any]) -> Pairs:
    return [(_text(member), float(score)) for member, score in raw]


def _float_or_none(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(_text(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class UserState:
    """What RT1 returns: recent ``(ts, item)`` newest first, seen items, maybe popularity."""

    recent: list[tuple[float, str]]
    seen: frozenset[str]
    segment_popularity: Pairs | None


@dataclass(frozen=True, slots=True)
class SharedRead:
    """One background refresh read (a single pipeline)."""

    global_popularity: Pairs
    segments: dict[str, Pairs]
    rules_version: str | None
    catalog_version: str | None
    experiments: str | None
    last_write: float | None


class StateReader:
    """Read-only domain access to the recommender state in Redis."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keyspace, *, retry_after_s: float = 0.5
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.retry_after_s = retry_after_s
        self.round_trips = 0  # request path
        self.background_round_trips = 0
        self.errors = 0
        self._down_until = 0.0

    @classmethod
    async def connect(cls, settings: Settings, *, attempts: int = 1) -> StateReader:
        """Create a client for ``settings.redis_url``; ping up to ``attempts`` times.

        The reader is returned even when Redis does not answer (the server must start and
        serve fallbacks with Redis down); ``available`` then starts False.
        """
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.network_timeout_s,
            socket_connect_timeout=min(settings.network_timeout_s, 1.0),
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            legacy_responses=False,  # native RESP3 scores: no float → bytes → float round trip
        )
        reader = cls(
            client, Keyspace(settings.key_prefix), retry_after_s=settings.redis_retry_after_s
        )
        for attempt in range(max(1, attempts)):
            try:
                deadline = asyncio.get_running_loop().time() + settings.network_timeout_s
                await reader._call(client.ping, deadline, background=True)
                break
            except UnavailableError:
                if attempt + 1 < attempts:
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
        return reader

    async def aclose(self) -> None:
        await self.redis.aclose()

    @property
    def available(self) -> bool:
        """False while the circuit is open after a recent error."""
        return time.monotonic() >= self._down_until

    async def _call(
        self, fn: Callable[[], Awaitable[T]], deadline: float | None, *, background: bool
    ) -> T:
        if background:
            self.background_round_trips += 1
            metrics.REDIS_ROUNDTRIPS.labels(metrics.ROLE_BACKGROUND).inc()
        else:
            self.round_trips += 1
            metrics.REDIS_ROUNDTRIPS.labels(metrics.ROLE_REQUEST).inc()
        try:
            async with asyncio.timeout_at(deadline):
                result = await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            metrics.REDIS_ERRORS.inc()
            self._down_until = time.monotonic() + self.retry_after_s
            raise UnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc
        if background:
            self._down_until = 0.0  # a good background read closes the circuit early
        return result

    # --- request path ----------------------------------------------------------------------
    async def read_user(
        self,
        *,
        user_id: str | None,
        session_id: str | None,
        max_recent: int,
        with_seen: bool,
        segment: str | None,
        top_n: int,
        deadline: float | None,
    ) -> UserState:
        """RT1: recent items, seen items and (when asked) a segment's popularity."""
        pipe = self.redis.pipeline(transaction=False)
        if user_id:
            pipe.lrange(self.keys.user_recent(user_id), 0, max_recent - 1)
            if with_seen:
                pipe.zrange(self.keys.user_seen(user_id), 0, -1)
        elif session_id:
            pipe.lrange(self.keys.session_recent(session_id), 0, SESSION_SEEN_MAX - 1)
        if segment is not None:
            pipe.zrevrange(self.keys.popularity(segment), 0, top_n - 1, withscores=True)
        replies = await self._call(pipe.execute, deadline, background=False)
        pos = 0
        recent: list[tuple[float, str]] = []
        seen: frozenset[str] = frozenset()
        if user_id:
            recent = parse_recent(replies[pos])
            pos += 1
            if with_seen:
                seen = frozenset(_text(m) for m in replies[pos])
                pos += 1
        elif session_id:
            session = parse_recent(replies[pos])
            pos += 1
            recent = session[:max_recent]
            seen = frozenset(item for _, item in session)
        popularity = _pairs(replies[pos]) if segment is not None else None
        return UserState(recent, seen, popularity)

    async def read_neighbours(
        self, anchors: Sequence[str], n: int, *, deadline: float | None
    ) -> dict[str, Pairs]:
        """RT2: the top ``n`` co-visitation neighbours of each anchor."""
        if not anchors:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for anchor in anchors:
            pipe.zrevrange(self.keys.covis(anchor), 0, n - 1, withscores=True)
        replies = await self._call(pipe.execute, deadline, background=False)
        return {anchor: _pairs(raw) for anchor, raw in zip(anchors, replies, strict=True)}

    async def read_similar(
        self, item_id: str, n: int, *, segment: str | None, top_n: int, deadline: float | None
    ) -> tuple[Pairs, Pairs | None]:
        """One round trip: neighbours of ``item_id`` (and a segment's popularity if asked)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(self.keys.covis(item_id), 0, n - 1, withscores=True)
        if segment is not None:
            pipe.zrevrange(self.keys.popularity(segment), 0, top_n - 1, withscores=True)
        replies = await self._call(pipe.execute, deadline, background=False)
        return _pairs(replies[0]), (_pairs(replies[1]) if segment is not None else None)

    # --- background refresh ----------------------------------------------------------------
    async def read_shared(
        self, segments: Sequence[str], *, top_n: int, deadline: float | None
    ) -> SharedRead:
        """Popularity (global + tracked segments), config versions and state age: one RT."""
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrevrange(keys.popularity(), 0, top_n - 1, withscores=True)
        for segment in segments:
            pipe.zrevrange(keys.popularity(segment), 0, top_n - 1, withscores=True)
        pipe.get(keys.rules_version)
        pipe.get(keys.catalog_version)
        pipe.get(keys.experiments)
        pipe.hget(keys.meta, "last_write")
        replies = await self._call(pipe.execute, deadline, background=True)
        n = len(segments)
        seg_pops = {seg: _pairs(raw) for seg, raw in zip(segments, replies[1 : 1 + n], strict=True)}
        rules_v, catalog_v, exp, last_write = replies[1 + n :]
        return SharedRead(
            global_popularity=_pairs(replies[0]),
            segments=seg_pops,
            rules_version=None if rules_v is None else _text(rules_v),
            catalog_version=None if catalog_v is None else _text(catalog_v),
            experiments=None if exp is None else _text(exp),
            last_write=_float_or_none(last_write),
        )

    async def read_rules(self, *, deadline: float | None) -> dict[str, str]:
        """Every stored rule: id → rule JSON."""
        raw = await self._call(
            lambda: self.redis.hgetall(self.keys.rules), deadline, background=True
        )
        return {_text(k): _text(v) for k, v in raw.items()}

    async def read_catalog(
        self, *, deadline: float | None, batch: int = 5000
    ) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
        """Item categories (HSCAN in batches, never blocking Redis long) and unavailable items."""
        categories: dict[str, tuple[str, ...]] = {}
        cursor = 0
        while True:

            async def scan(cur: int = cursor) -> tuple[int, Any]:
                return await self.redis.hscan(self.keys.item_categories, cur, count=batch)

            cursor, chunk = await self._call(scan, deadline, background=True)
            for item, cats in chunk.items():
                text = _text(cats)
                categories[_text(item)] = tuple(c for c in text.split(",") if c)
            if cursor == 0:
                break
        members = await self._call(
            lambda: self.redis.smembers(self.keys.unavailable_items), deadline, background=True
        )
        return categories, frozenset(_text(m) for m in members)

    async def read_ctr(self, top: int, *, deadline: float | None) -> list[tuple[str, float, float]]:
        """The ``top`` most-shown items with (impressions, clicks)."""
        shown = await self._call(
            lambda: self.redis.zrevrange(self.keys.item_impressions, 0, top - 1, withscores=True),
            deadline,
            background=True,
        )
        pairs = _pairs(shown)
        if not pairs:
            return []
        items = [item for item, _ in pairs]
        clicks = await self._call(
            lambda: self.redis.zmscore(self.keys.item_clicks, items), deadline, background=True
        )
        return [
            (item, imp, float(clk) if clk is not None else 0.0)
            for (item, imp), clk in zip(pairs, clicks, strict=True)
        ]
