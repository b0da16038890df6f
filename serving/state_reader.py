"""Redis gateway of the server: domain reads, at most two round trips per request, counted.

Request path (``read_user`` then ``read_neighbours``, or ``read_similar`` alone):

* RT1 — pipeline: LRANGE recent (user or session), ZRANGE seen (users), and the segment's
  popularity top-N when the in-process cache does not hold that segment yet. Recent and seen
  items read by an earlier request of the same user stay in the in-process user caches until
  Redis says the user's keys changed (an event of the user); no RT1 at all when both are
  cached and the segment is known.
* RT2 — pipeline: ZREVRANGE covis(anchor) WITHSCORES for each anchor whose row is not in the
  in-process :class:`~serving.neighbour_cache.NeighbourCache` (kept exact by Redis
  invalidation messages); no RT2 at all when every row is cached.

The request path goes through a :class:`RequestClient`: readers made by
:meth:`StateReader.connect` use a :class:`~serving.wire.WireClient` (one multiplexed socket,
hiredis parsing) or, asked for ``redis-py``, a :class:`RedisPyClient` (pipelines on a
redis-py asyncio connection pool); ``streamrec bench serve --redis-client both`` measures the
two side by side (docs/benchmarks.md). A reader built around a bare redis-py client (tests,
fakeredis) sends the same commands through a pipeline on it. Background reads always use
redis-py. (Aggregating the neighbour lists inside Redis with a Lua script costs Redis more
CPU than the server saves: docs/benchmarks.md, "Tried and dropped".)

Shared state (popularity, rules, catalog, experiments, state age) is read by the background
refresher of :mod:`serving.shared_state` through ``read_shared`` and friends.

Every Redis error or timeout is counted (``streamrec_serving_redis_errors_total``), opens a
short circuit (requests skip Redis for ``retry_after_s``) and is raised as
:class:`~core.errors.UnavailableError`, which the recommender turns into a fallback.
``deadline`` arguments are absolute event-loop times (``loop.time()``); None = no limit
beyond the client's socket timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from core.errors import UnavailableError
from core.retry import retry
from core.settings import Settings
from schemas.keyspace import Keyspace, parse_recent
from serving import metrics
from serving.neighbour_cache import NeighbourCache
from serving.tracked_cache import WHOLE, TrackedCache
from serving.wire import Command, WireClient

T = TypeVar("T")
Pairs = list[tuple[str, float]]
Row = Sequence[tuple[str, float]]  # read-only: rows may be shared between requests
SESSION_SEEN_MAX = 200
_REQUEST_TRIPS = metrics.REDIS_ROUNDTRIPS.labels(metrics.ROLE_REQUEST)
_BACKGROUND_TRIPS = metrics.REDIS_ROUNDTRIPS.labels(metrics.ROLE_BACKGROUND)
_ROW_CACHE = {r: metrics.ROW_CACHE.labels(r) for r in ("hit", "miss", "invalidated")}
_USER_CACHE = {r: metrics.USER_CACHE.labels(r) for r in ("hit", "miss", "invalidated")}
_CACHING_YES: Command = ("CLIENT", "CACHING", "YES")  # track the key of the next command


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(raw: Sequence[Any]) -> Pairs:
    """``(member, score)`` from a WITHSCORES reply, as pairs or flat (raw RESP2)."""
    if not raw:
        return []
    first = raw[0]
    if isinstance(first, list | tuple):
        if isinstance(first[0], str) and isinstance(first[1], float):  # RESP3 (wire client)
            return cast(Pairs, list(map(tuple, raw)))
        return [(_text(member), float(score)) for member, score in raw]
    if isinstance(first, str):  # RESP2, decoded: convert at C speed
        return list(zip(raw[0::2], map(float, raw[1::2]), strict=True))
    flat = iter(raw)
    return [(_text(member), float(score)) for member, score in zip(flat, flat, strict=True)]


def _members(raw: Sequence[Any]) -> frozenset[str]:
    """The members of a ZRANGE reply (decoded already by the wire client)."""
    if raw and type(raw[0]) is str:
        return frozenset(raw)
    return frozenset(_text(m) for m in raw)


def _float_or_none(value: object) -> float | None:
    if value is None:
        return None
    try:
        return float(_text(value))
    except ValueError:
        return None


Recent = tuple[tuple[float, str], ...]


class UserQuery(NamedTuple):
    """The arguments of :meth:`StateReader.read_user` but the deadline."""

    user_id: str | None
    session_id: str | None
    max_recent: int
    with_seen: bool
    segment: str | None
    top_n: int


@dataclass(frozen=True, slots=True)
class UserState:
    """What RT1 returns: recent ``(ts, item)`` newest first, seen items, maybe popularity."""

    recent: Sequence[tuple[float, str]]  # read-only: may be shared with the user cache
    seen: frozenset[str]
    segment_popularity: Pairs | None


@dataclass(slots=True)
class UserCaches:
    """What the server keeps of users between their requests (see :mod:`serving.tracked_cache`).

    ``recent``: parsed LRANGE of a user's (or a session's) recent list; ``seen``: a user's
    whole seen set.
    """

    recent: TrackedCache[Recent]
    seen: TrackedCache[frozenset[str]]

    @classmethod
    def sized(cls, users: int) -> UserCaches:
        return cls(TrackedCache(users), TrackedCache(users))

    def counts(self) -> dict[str, int]:
        """Both caches' :meth:`~serving.tracked_cache.TrackedCache.counts`, added up."""
        seen = self.seen.counts()
        return {result: n + seen[result] for result, n in self.recent.counts().items()}


@dataclass(frozen=True, slots=True)
class SharedRead:
    """One background refresh read (a single pipeline)."""

    global_popularity: Pairs
    segments: dict[str, Pairs]
    rules_version: str | None
    catalog_version: str | None
    experiments: str | None
    last_write: float | None
    #: the run-time settings overrides JSON (Admin config, ``P:cfg``); None = none
    runtime_config: str | None = None


RequestClientKind = Literal["wire", "redis-py"]
#: the request-path clients :meth:`StateReader.connect` builds (``bench serve --redis-client``)
REQUEST_CLIENTS: tuple[RequestClientKind, ...] = ("wire", "redis-py")
_INVALIDATIONS = "__redis__:invalidate"


class RequestClient(Protocol):
    """The request path's Redis connection (:class:`WireClient` or :class:`RedisPyClient`).

    ``execute`` returns raw replies in order (an error reply is an exception *in* the list)
    and raises ``RedisError``, ``OSError`` or ``TimeoutError``. Set ``on_push`` before
    :meth:`open` to have keys read after ``CLIENT CACHING YES`` invalidated: it gets
    ``["invalidate", keys or None]``; ``on_reset`` runs whenever invalidations may have been
    lost; ``tracking`` is True while they flow.
    """

    on_push: Callable[[list[Any]], None] | None
    on_reset: Callable[[], None] | None

    @property
    def tracking(self) -> bool: ...

    async def open(self, deadline: float) -> None:
        """Connect now (with ``on_push``: until invalidations flow); raises as ``execute``."""

    async def execute(self, commands: Sequence[Command], deadline: float | None) -> list[Any]:
        """Send ``commands`` as one batch (``deadline``: absolute ``loop.time()``)."""

    async def aclose(self) -> None: ...


class RedisPyClient:
    """The request path through redis-py's asyncio client.

    A batch is a non-transactional pipeline on one pooled connection (concurrent batches use
    as many connections). With ``on_push`` set, one more connection subscribes to
    ``__redis__:invalidate`` (read by a task) and every pooled connection turns on
    ``CLIENT TRACKING ON REDIRECT <its id> OPTIN``, so the invalidations of keys read through
    any of them arrive there. ``on_reset`` runs when that listener is subscribed or lost,
    when a batch fails and when a pooled connection is made again: redis-py drops the
    connection of an interrupted pipeline, and nothing invalidates what a lost connection
    read. Only a client made by :meth:`from_url` (its own pool) can track.
    """

    def __init__(self, redis: aioredis.Redis, *, owned: bool = False) -> None:
        self.redis = redis
        self.on_push: Callable[[list[Any]], None] | None = None
        self.on_reset: Callable[[], None] | None = None
        self._owned = owned
        self._redirect: int | None = None  # the listener's client id while it is subscribed
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._made: weakref.WeakSet[Any] = weakref.WeakSet()  # pooled connections made once
        #: held while a pooled connection is set up and while the listener disconnects the
        #: pool: a connection disconnected mid set-up is reconnected by redis-py inside its
        #: own ``on_connect``, whose pending reply then never comes (the request hangs)
        self._setting_up = asyncio.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout_s: float, socket_timeout_s: float
    ) -> RedisPyClient:
        """A client on a pool of its own (RESP3, replies decoded), able to track reads."""
        made: list[RedisPyClient] = []

        async def set_up(connection: Any) -> None:
            await made[0]._set_up(connection)

        redis = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            protocol=3,
            legacy_responses=False,
            redis_connect_func=set_up,
        )
        made.append(cls(redis, owned=True))
        return made[0]

    @property
    def tracking(self) -> bool:
        return self.on_push is not None and self._redirect is not None

    async def open(self, deadline: float) -> None:
        if self.on_push is not None and self._owned:
            if self._listener is None:
                self._listener = asyncio.get_running_loop().create_task(self._listen())
            async with asyncio.timeout_at(deadline):
                await self._subscribed.wait()
        await self.execute([("PING",)], deadline)

    async def execute(self, commands: Sequence[Command], deadline: float | None) -> list[Any]:
        try:
            async with asyncio.timeout_at(deadline):
                pipe = self.redis.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute(raise_on_error=False)
        except BaseException:
            self._reset()  # the connection may be gone, and with it its tracked keys
            raise

    def _reset(self) -> None:
        if self.on_reset is not None:
            self.on_reset()

    async def _set_up(self, connection: Any) -> None:
        """Every pooled connection, at every connect: redis-py's set-up, then tracking."""
        async with self._setting_up:
            await connection.on_connect()
            if connection in self._made:  # made again: what it read before is tracked no more
                self._reset()
            self._made.add(connection)
            redirect = self._redirect
            if self.on_push is not None and redirect is not None:
                await connection.send_command(
                    "CLIENT", "TRACKING", "ON", "REDIRECT", redirect, "OPTIN"
                )
                await connection.read_response()  # an error reply raises: the connect fails

    async def _listen(self) -> None:
        """Keep a connection subscribed to the invalidations; reconnect when it is lost."""
        pool = self.redis.connection_pool
        kwargs = {**pool.connection_kwargs, "protocol": 2, "socket_timeout": None}
        kwargs.pop("redis_connect_func", None)
        failures = 0
        while True:
            connection: Any = pool.connection_class(**kwargs)
            try:
                await connection.connect()
                await connection.send_command("CLIENT", "ID")
                client_id = int(await connection.read_response())
                await connection.send_command("SUBSCRIBE", _INVALIDATIONS)
                await connection.read_response()
                async with self._setting_up:
                    self._redirect = client_id
                    await pool.disconnect()  # pooled connections reconnect, redirecting here
                self._reset()
                self._subscribed.set()
                failures = 0
                while True:
                    message = await connection.read_response(timeout=math.inf)
                    if message[0] == "message" and self.on_push is not None:
                        self.on_push(["invalidate", message[2]])
            except (RedisError, OSError, ValueError):
                failures += 1
            finally:
                self._redirect = None
                self._subscribed.clear()
                self._reset()
                await connection.disconnect(nowait=True)
            await asyncio.sleep(min(0.05 * 2**failures, 1.0))

    async def aclose(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._owned:
            await self.redis.aclose()


def request_client(kind: RequestClientKind, settings: Settings) -> RequestClient:
    """A request-path client of ``kind`` for ``settings.redis_url`` (redis-py for URLs the
    wire client does not speak, e.g. TLS)."""
    connect_timeout_s = min(settings.network_timeout_s, 1.0)
    if kind == "wire":
        wire = WireClient.from_url(
            settings.redis_url,
            connect_timeout_s=connect_timeout_s,
            socket_timeout_s=settings.network_timeout_s,
        )
        if wire is not None:
            return wire
    return RedisPyClient.from_url(
        settings.redis_url,
        connect_timeout_s=connect_timeout_s,
        socket_timeout_s=settings.network_timeout_s,
    )


class StateReader:
    """Read-only domain access to the recommender state in Redis."""

    #: False in readers that must see their own process's writes at once (the replay): an
    #: invalidation push may still be on its way when the next read comes
    tracks_reads: ClassVar[bool] = True

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
        #: the request path's connection (:meth:`connect` sets one that tracks reads); by
        #: default pipelines on ``redis``, which cannot
        self.requests: RequestClient = RedisPyClient(redis)
        self._clients: dict[RequestClientKind, RequestClient] = {}  # closed by aclose
        #: co-visitation rows kept in process (set by :meth:`connect`; used while
        #: ``requests.tracking``)
        self.neighbour_cache: NeighbourCache | None = None
        #: users' recent and seen items kept in process (likewise)
        self.user_caches: UserCaches | None = None
        self._cache_published: dict[str, dict[str, int]] = {}

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        attempts: int = 1,
        tracked_caches: bool = True,
        client: RequestClientKind = "wire",
    ) -> StateReader:
        """Create a client for ``settings.redis_url``; ping up to ``attempts`` times.

        The reader is returned even when Redis does not answer (the server must start and
        serve fallbacks with Redis down); ``available`` then starts False. ``client`` is
        the request path's connection (:func:`request_client`). With ``tracked_caches`` the
        reader keeps co-visitation rows (when ``serving_neighbour_cache_rows`` > 0) and
        users' recent and seen items (when ``serving_user_cache_users`` > 0) in process.
        """
        redis = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=settings.network_timeout_s,
            socket_connect_timeout=min(settings.network_timeout_s, 1.0),
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            legacy_responses=False,  # native RESP3 scores: no float → bytes → float round trip
        )
        reader = cls(
            redis, Keyspace(settings.key_prefix), retry_after_s=settings.redis_retry_after_s
        )
        rows, users = settings.serving_neighbour_cache_rows, settings.serving_user_cache_users
        if tracked_caches and cls.tracks_reads:
            reader.neighbour_cache = NeighbourCache(rows) if rows > 0 else None
            reader.user_caches = UserCaches.sized(users) if users > 0 else None
        requests = reader.use_client(client, settings)

        async def ping() -> None:
            deadline = asyncio.get_running_loop().time() + settings.network_timeout_s
            await reader._call(redis.ping, deadline, background=True)
            # connect it now: tracking is known from the start
            await reader._call(partial(requests.open, deadline), deadline, background=True)

        with contextlib.suppress(UnavailableError):  # then served from fallbacks
            await retry(
                ping,
                what="connect to Redis",
                attempts=max(1, attempts),
                retry_on=(UnavailableError,),
            )
        return reader

    def publish_cache_metrics(self) -> None:
        """Add the caches' counts since the last call to ``streamrec_serving_row_cache`` and
        ``streamrec_serving_user_cache``.

        Called by the refresher, so the request path pays no metric update per lookup.
        """
        rows, users = self.neighbour_cache, self.user_caches
        if rows is not None:
            self._publish("rows", _ROW_CACHE, rows.counts())
        if users is not None:
            self._publish("users", _USER_CACHE, users.counts())

    def _publish(self, name: str, counters: dict[str, Any], now: dict[str, int]) -> None:
        published = self._cache_published.get(name, {})
        for result, total in now.items():
            delta = total - published.get(result, 0)
            if delta > 0:
                counters[result].inc(delta)
        self._cache_published[name] = now

    def use_client(self, kind: RequestClientKind, settings: Settings) -> RequestClient:
        """Send the request path through the client of ``kind`` from now on; return it.

        One client per kind is made (:func:`request_client`) and kept until :meth:`aclose`;
        the caches start empty, as after a reconnect. Open a new client before its first
        request (:meth:`connect` does): tracking starts there.
        """
        requests = self._clients.get(kind)
        if requests is None:
            requests = self._clients[kind] = request_client(kind, settings)
            if self.neighbour_cache is not None or self.user_caches is not None:
                requests.on_push, requests.on_reset = self._invalidate, self._clear_caches
        self.requests = requests
        self._clear_caches()
        return requests

    def _caches(self) -> list[TrackedCache[Any]]:
        caches: list[TrackedCache[Any]] = []
        if self.neighbour_cache is not None:
            caches.append(self.neighbour_cache)
        if self.user_caches is not None:
            caches.extend((self.user_caches.recent, self.user_caches.seen))
        return caches

    def _invalidate(self, push: list[Any]) -> None:
        """A push from Redis: ``["invalidate", keys or None]`` drops those keys (all: None)."""
        if len(push) == 2 and push[0] == "invalidate":
            for cache in self._caches():
                cache.invalidate(push[1])

    def _clear_caches(self) -> None:
        for cache in self._caches():
            cache.clear()

    @property
    def wire(self) -> WireClient | None:
        """The request path's client when it is the wire client."""
        requests = self.requests
        return requests if isinstance(requests, WireClient) else None

    async def aclose(self) -> None:
        try:
            for requests in self._clients.values():
                await requests.aclose()
        finally:
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
            _BACKGROUND_TRIPS.inc()
        else:
            self.round_trips += 1
            _REQUEST_TRIPS.inc()
        try:
            async with asyncio.timeout_at(deadline):
                result = await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc
        if background:
            self._down_until = 0.0  # a good background read closes the circuit early
        return result

    def _failed(self, exc: BaseException) -> UnavailableError:
        """Count an error, open the circuit; the error to raise."""
        self.errors += 1
        metrics.REDIS_ERRORS.inc()
        self._down_until = time.monotonic() + self.retry_after_s
        return UnavailableError(f"redis: {type(exc).__name__}: {exc}")

    async def _request(self, commands: Sequence[Command], deadline: float | None) -> list[Any]:
        """One request-path round trip: raw replies (RESP2 shapes), counted; errors raise."""
        self.round_trips += 1
        _REQUEST_TRIPS.inc()
        try:
            replies = await self.requests.execute(commands, deadline)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._failed(exc) from exc
        for reply in replies:
            if isinstance(reply, Exception):
                raise self._failed(reply) from reply
        return replies

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
        users = self.user_caches
        if users is not None and self.requests.tracking:
            query = UserQuery(user_id, session_id, max_recent, with_seen, segment, top_n)
            return await self._read_user_cached(users, query, deadline)
        commands = self.user_commands(user_id, session_id, max_recent, with_seen, segment, top_n)
        replies = await self._request(commands, deadline) if commands else []
        pos = 0
        recent: Sequence[tuple[float, str]] = []
        seen: frozenset[str] = frozenset()
        if user_id:
            recent = parse_recent(replies[pos])
            pos += 1
            if with_seen:
                seen = _members(replies[pos])
                pos += 1
        elif session_id:
            session = parse_recent(replies[pos])
            pos += 1
            recent = session[:max_recent]
            seen = frozenset(item for _, item in session)
        popularity = _pairs(replies[pos]) if segment is not None else None
        return UserState(recent, seen, popularity)

    async def _read_user_cached(
        self, users: UserCaches, query: UserQuery, deadline: float | None
    ) -> UserState:
        """:meth:`read_user` through the user caches: Redis only for what they lack."""
        user_id, session_id, max_recent, with_seen, segment, top_n = query
        keys = self.keys
        if user_id:
            recent_key, recent_n = keys.user_recent(user_id), max_recent
        elif session_id:
            recent_key, recent_n = keys.session_recent(session_id), SESSION_SEEN_MAX
        else:
            recent_key, recent_n = None, 0
        seen_key = keys.user_seen(user_id) if user_id and with_seen else None
        recent = users.recent.lookup(recent_key, recent_n) if recent_key else ()
        seen_set = users.seen.lookup(seen_key, WHOLE) if seen_key else frozenset()
        commands: list[Command] = []
        if recent is None and recent_key is not None:
            (recent_token,) = users.recent.reserve([recent_key])
            commands += [_CACHING_YES, ("LRANGE", recent_key, 0, recent_n - 1)]
        if seen_set is None and seen_key is not None:
            (seen_token,) = users.seen.reserve([seen_key])
            commands += [_CACHING_YES, ("ZRANGE", seen_key, 0, -1)]
        if segment is not None:
            commands.append(("ZREVRANGE", keys.popularity(segment), 0, top_n - 1, "WITHSCORES"))
        popularity: Pairs | None = None
        if commands:
            replies = await self._request(commands, deadline)
            pos = 1  # past the first CLIENT CACHING reply
            if recent is None and recent_key is not None:
                recent = tuple(parse_recent(replies[pos]))
                users.recent.fill(recent_key, recent_token, recent_n, recent)
                pos += 2
            if seen_set is None and seen_key is not None:
                seen_set = _members(replies[pos])
                users.seen.fill(seen_key, seen_token, WHOLE, seen_set)
            if segment is not None:
                popularity = _pairs(replies[-1])
        assert recent is not None and seen_set is not None
        if session_id and not user_id:  # the whole session was read: all of it counts as seen
            seen_set = frozenset(item for _, item in recent)
        if len(recent) > max_recent:  # cached for a request that wanted more
            recent = recent[:max_recent]
        return UserState(recent, seen_set, popularity)

    def user_commands(
        self,
        user_id: str | None,
        session_id: str | None,
        max_recent: int,
        with_seen: bool,
        segment: str | None,
        top_n: int,
        *,
        seen_scores: bool = False,
    ) -> list[Command]:
        """The commands of RT1 (``seen_scores``: the seen set WITHSCORES)."""
        keys = self.keys
        commands: list[Command] = []
        if user_id:
            commands.append(("LRANGE", keys.user_recent(user_id), 0, max_recent - 1))
            if with_seen:
                seen: Command = ("ZRANGE", keys.user_seen(user_id), 0, -1)
                commands.append((*seen, "WITHSCORES") if seen_scores else seen)
        elif session_id:
            commands.append(("LRANGE", keys.session_recent(session_id), 0, SESSION_SEEN_MAX - 1))
        if segment is not None:
            commands.append(("ZREVRANGE", keys.popularity(segment), 0, top_n - 1, "WITHSCORES"))
        return commands

    async def read_neighbours(
        self, anchors: Sequence[str], n: int, *, deadline: float | None
    ) -> dict[str, Row]:
        """RT2: the top ``n`` co-visitation neighbours of each anchor (rows are read-only)."""
        if not anchors:
            return {}
        covis = self.keys.covis
        cache = self.neighbour_cache
        if cache is not None and self.requests.tracking:
            return await self._read_neighbours_cached(cache, anchors, n, deadline)
        replies = await self._request(
            [("ZREVRANGE", covis(anchor), 0, n - 1, "WITHSCORES") for anchor in anchors], deadline
        )
        return {anchor: _pairs(raw) for anchor, raw in zip(anchors, replies, strict=True)}

    async def _read_neighbours_cached(
        self, cache: NeighbourCache, anchors: Sequence[str], n: int, deadline: float | None
    ) -> dict[str, Row]:
        covis = self.keys.covis
        out: dict[str, Row] = {}
        missing: list[tuple[str, str]] = []
        for anchor in anchors:
            key = covis(anchor)
            row = cache.get(key, n)
            if row is None:
                missing.append((anchor, key))
            else:
                out[anchor] = row
        if not missing:
            return out
        tokens = cache.reserve([key for _, key in missing])
        commands: list[Command] = []
        for _, key in missing:
            commands.append(_CACHING_YES)
            commands.append(("ZREVRANGE", key, 0, n - 1, "WITHSCORES"))
        replies = await self._request(commands, deadline)
        for (anchor, key), token, raw in zip(missing, tokens, replies[1::2], strict=True):
            row = tuple(_pairs(raw))
            cache.fill(key, token, n, row)
            out[anchor] = row
        return out

    async def read_similar(
        self, item_id: str, n: int, *, segment: str | None, top_n: int, deadline: float | None
    ) -> tuple[Pairs, Pairs | None]:
        """One round trip: neighbours of ``item_id`` (and a segment's popularity if asked)."""
        commands: list[Command] = [("ZREVRANGE", self.keys.covis(item_id), 0, n - 1, "WITHSCORES")]
        if segment is not None:
            commands.append(
                ("ZREVRANGE", self.keys.popularity(segment), 0, top_n - 1, "WITHSCORES")
            )
        replies = await self._request(commands, deadline)
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
        pipe.get(keys.runtime_config)
        replies = await self._call(pipe.execute, deadline, background=True)
        n = len(segments)
        seg_pops = {seg: _pairs(raw) for seg, raw in zip(segments, replies[1 : 1 + n], strict=True)}
        rules_v, catalog_v, exp, last_write, runtime = replies[1 + n :]
        return SharedRead(
            global_popularity=_pairs(replies[0]),
            segments=seg_pops,
            rules_version=None if rules_v is None else _text(rules_v),
            catalog_version=None if catalog_v is None else _text(catalog_v),
            experiments=None if exp is None else _text(exp),
            last_write=_float_or_none(last_write),
            runtime_config=None if runtime is None else _text(runtime),
        )

    # --- bandit allocation (issue 20, serving/bandit.py) -------------------------------------
    async def read_variant_counters(self, *, deadline: float | None) -> dict[str, float]:
        """The worker's ``surface|variant|imp`` / ``|clk`` counters (background)."""
        raw = await self._call(
            lambda: self.redis.hgetall(self.keys.surface_variant_ctr), deadline, background=True
        )
        counters: dict[str, float] = {}
        for name, value in raw.items():
            number = _float_or_none(value)
            if number is not None:
                counters[_text(name)] = number
        return counters

    async def claim_arm(
        self, experiment: str, unit: str, arm: str, *, ttl_s: int, deadline: float | None
    ) -> str:
        """The unit's sticky arm: the stored one, else ``arm``, stored now (``SET NX GET EX``).

        One round trip; concurrent servers agree (the first writer wins).
        """
        key = self.keys.bandit_arm(experiment, unit)
        old = await self._call(
            lambda: self.redis.set(key, arm, nx=True, get=True, ex=ttl_s),
            deadline,
            background=False,
        )
        return arm if old is None else _text(old)

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

    async def read_exploration(
        self, pool_max: int, *, deadline: float | None
    ) -> tuple[list[tuple[str, float, float, float]], dict[str, float]]:
        """The new-item pool with counts, and the per-surface CTR counters (background).

        Returns ``[(item, announced_ts, impressions, clicks)]`` for the newest ``pool_max``
        pool items and the ``surface|variant|imp`` / ``|clk`` counters: two round trips (the
        pool and the counters, then the pool items' impressions and clicks).
        """
        keys = self.keys

        async def pool_and_counters() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrevrange(keys.new_items, 0, pool_max - 1, withscores=True)
            pipe.hgetall(keys.surface_variant_ctr)
            return await pipe.execute()

        pool_raw, counters_raw = await self._call(pool_and_counters, deadline, background=True)
        counters: dict[str, float] = {}
        for name, value in counters_raw.items():
            number = _float_or_none(value)
            if number is not None:
                counters[_text(name)] = number
        pool = _pairs(pool_raw)
        if not pool:
            return [], counters
        items = [item for item, _ in pool]

        async def counts() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zmscore(keys.item_impressions, items)
            pipe.zmscore(keys.item_clicks, items)
            return await pipe.execute()

        imps, clks = await self._call(counts, deadline, background=True)
        return [
            (item, ts, float(imp or 0.0), float(clk or 0.0))
            for (item, ts), imp, clk in zip(pool, imps, clks, strict=True)
        ], counters
