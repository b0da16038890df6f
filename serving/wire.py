"""The request path's Redis connection: one multiplexed socket, replies parsed by hiredis.

Why not redis-py here: the server spends more CPU per request through redis-py's asyncio
client (``streamrec bench serve --redis-client both``; docs/benchmarks.md). The alternative,
:class:`~serving.state_reader.RedisPyClient`, serves URLs this client does not speak (TLS);
background reads and Admin writes use redis-py (see :mod:`serving.state_reader`).

:class:`WireClient` packs a batch of commands with ``hiredis.pack_command``, queues it (all
batches queued during one event-loop iteration leave in one ``transport.write``) and resolves
the batch's future when its last reply arrives; replies come back in order, so any number of
requests share the socket (pipelining for free). The
connection speaks RESP3 when Redis does (``HELLO 3``; Redis 6+): scores then arrive as doubles
that hiredis turns into floats in C, not in Python (docs/benchmarks.md). Replies are raw
(strings decoded as UTF-8; WITHSCORES as ``[member, score]`` pairs under RESP3, flat under
RESP2); an error reply is a ``redis.exceptions.ResponseError``
*in* the reply list (the caller decides). With ``on_push`` set, each connection also turns
on ``CLIENT TRACKING ON OPTIN`` and hands the RESP3 pushes (invalidations) to it; ``on_reset``
runs whenever a connection is made or lost (see :mod:`serving.neighbour_cache`). Failures
raise ``ConnectionError`` (an ``OSError``) or ``TimeoutError``:

* deadline passed → ``TimeoutError`` for that call only; its replies are dropped when they
  arrive. If the oldest unanswered batch is older than ``socket_timeout_s`` the connection is
  aborted (every waiter fails) and the next call reconnects.
* connection lost / refused → every waiter fails; the next call reconnects (one connect
  shared by concurrent callers, bounded by ``connect_timeout_s`` and the caller's deadline).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import InvalidResponse, ResponseError

Arg = str | bytes | int | float
Command = Sequence[Arg]
FEED_SLICE = 16 * 1024
#: ``hiredis.pack_command`` (its stub types the argument as a 1-tuple)
_pack: Callable[[tuple[Arg, ...]], bytes] = hiredis.pack_command  # type: ignore[assignment]


class _Batch:
    __slots__ = ("expected", "future", "replies", "sent_at")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, sent_at: float) -> None:
        self.future = future
        self.expected = expected
        self.replies: list[Any] = []
        self.sent_at = sent_at


class _Protocol(asyncio.Protocol):
    """Writes batches, matches replies to them in order; hands RESP3 pushes to ``on_push``."""

    def __init__(
        self,
        on_push: Callable[[list[Any]], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=ResponseError, encoding="utf-8"
        )
        self.pending: deque[_Batch] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.tracking = False  # CLIENT TRACKING accepted on this connection
        self._on_push = on_push
        self._on_lost = on_lost
        self._out: list[bytes] = []  # written once per event-loop iteration

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        # fed in slices: the reader shifts its unread bytes down after each reply, which over
        # one large read (many requests' replies under load) grows with the read's size
        for offset in range(0, len(data), FEED_SLICE):
            self.reader.feed(data, offset, min(FEED_SLICE, len(data) - offset))
            if not self._drain():
                return

    def _drain(self) -> bool:
        """Hand every complete reply to its batch; False once the connection is dropped."""
        reader = self.reader
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except UnicodeDecodeError as exc:  # the reader moved past it: still in sync
                reply = InvalidResponse(f"redis reply is not UTF-8: {exc}")
            except InvalidResponse as exc:  # the stream is unusable
                self.abort(ConnectionError(f"redis protocol error: {exc}"))
                return False
            if reply is False:
                return True
            if type(reply) is hiredis.PushNotification:  # out of band (RESP3): not a reply
                if self._on_push is not None:
                    self._on_push(reply)
                continue
            if not pending:
                self.abort(ConnectionError("redis sent a reply nobody asked for"))
                return False
            batch = pending[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                pending.popleft()
                if not batch.future.done():
                    batch.future.set_result(batch.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis connection lost: {exc or 'closed by server'}"))

    def _fail(self, exc: Exception) -> None:
        if not self.closed and self._on_lost is not None:
            self._on_lost()  # before any waiter resumes
        self.closed = True
        while self.pending:
            batch = self.pending.popleft()
            if not batch.future.done():
                batch.future.set_exception(exc)

    def abort(self, exc: Exception) -> None:
        """Fail every waiter now and drop the socket."""
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, payload: bytes, batch: _Batch) -> None:
        """Queue a batch; batches queued in one loop iteration leave in one write."""
        self.pending.append(batch)
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(payload)


def _expire(future: asyncio.Future[list[Any]]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("redis did not answer before the deadline"))


class WireClient:
    """A lazily (re)connected, multiplexed Redis connection; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 5.0,
    ) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        #: set before the first call to turn on ``CLIENT TRACKING ON OPTIN`` (see
        #: :mod:`serving.neighbour_cache`): ``on_push`` gets every RESP3 push,
        #: ``on_reset`` runs when a connection is made or lost
        self.on_push: Callable[[list[Any]], None] | None = None
        self.on_reset: Callable[[], None] | None = None
        self.username, self.password = username, password
        self.connect_timeout_s = connect_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls, url: str, *, connect_timeout_s: float, socket_timeout_s: float
    ) -> WireClient | None:
        """A client for ``redis://`` and ``unix://`` URLs; None for others (e.g. TLS)."""
        parts = urlsplit(url)
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "redis":
            path_db = parts.path.lstrip("/")
            db = int(query.get("db") or path_db or 0)
            return cls(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 6379,
                db=db,
                username=username,
                password=password,
                connect_timeout_s=connect_timeout_s,
                socket_timeout_s=socket_timeout_s,
            )
        if parts.scheme == "unix":
            return cls(
                path=parts.path,
                db=int(query.get("db", 0)),
                username=username,
                password=password,
                connect_timeout_s=connect_timeout_s,
                socket_timeout_s=socket_timeout_s,
            )
        return None

    @property
    def connected(self) -> bool:
        return self._proto is not None and self._proto.usable

    @property
    def tracking(self) -> bool:
        """True while the current connection has client tracking on (RESP3 pushes)."""
        proto = self._proto
        return proto is not None and proto.tracking and proto.usable

    async def open(self, deadline: float) -> None:
        """Connect now (a PING), so that ``tracking`` is known before the first request."""
        await self.execute([("PING",)], deadline)

    async def execute(self, commands: Sequence[Command], deadline: float | None) -> list[Any]:
        """Send ``commands`` as one batch; their raw replies, in order.

        ``deadline`` is an absolute ``loop.time()``; None means ``socket_timeout_s`` from now.
        """
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.socket_timeout_s
        proto = self._proto
        if proto is None or not proto.usable:
            proto = await self._connect(deadline)
        payload = b"".join([_pack(tuple(c)) for c in commands])
        future: asyncio.Future[list[Any]] = loop.create_future()
        proto.send(payload, _Batch(future, len(commands), time.monotonic()))
        timer = loop.call_at(deadline, _expire, future)
        try:
            return await future
        except TimeoutError:
            self._drop_if_stale(proto)
            raise
        finally:
            timer.cancel()

    def _drop_if_stale(self, proto: _Protocol) -> None:
        pending = proto.pending
        if pending and time.monotonic() - pending[0].sent_at > self.socket_timeout_s:
            proto.abort(TimeoutError(f"redis silent for over {self.socket_timeout_s:g}s"))

    async def _connect(self, deadline: float) -> _Protocol:
        if self._closed:
            raise ConnectionError("the redis client is closed")
        task = self._connecting
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open())
            self._connecting = task
            task.add_done_callback(self._connected)
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(task)

    def _connected(self, task: asyncio.Task[_Protocol]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            if self.on_reset is not None:
                self.on_reset()  # whatever was cached came through an older connection
            self._proto = task.result()

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        track = self.on_push is not None

        def factory() -> _Protocol:
            return _Protocol(self.on_push, self.on_reset)

        async with asyncio.timeout(self.connect_timeout_s):
            if self.path is not None:
                _, proto = await loop.create_unix_connection(factory, self.path)
            else:
                _, proto = await loop.create_connection(factory, self.host, self.port)
            setup: list[Command] = []
            if self.password is not None:
                auth: list[Arg] = ["AUTH"]
                if self.username is not None:
                    auth.append(self.username)
                setup.append([*auth, self.password])
            setup.append(["HELLO", "3"])  # an error reply (Redis < 6) leaves RESP2 on
            if self.db:
                setup.append(["SELECT", self.db])
            if track:  # invalidations come on this connection: needs RESP3 (Redis 6+)
                setup.append(["CLIENT", "TRACKING", "ON", "OPTIN"])
            future: asyncio.Future[list[Any]] = loop.create_future()
            payload = b"".join(_pack(tuple(c)) for c in setup)
            proto.send(payload, _Batch(future, len(setup), time.monotonic()))
            try:
                replies = await future
            except BaseException:
                proto.abort(ConnectionError("redis connection setup failed"))
                raise
            failed = {c[0] for c, r in zip(setup, replies, strict=True) if isinstance(r, Exception)}
            proto.tracking = track and not failed & {"HELLO", "CLIENT"}
            for command, reply in zip(setup, replies, strict=True):
                if isinstance(reply, ResponseError) and command[0] not in {"HELLO", "CLIENT"}:
                    proto.abort(ConnectionError(f"redis refused the connection: {reply}"))
                    raise ConnectionError(f"redis refused the connection: {reply}")
        if self._closed:  # closed while connecting
            proto.abort(ConnectionError("the redis client is closed"))
            raise ConnectionError("the redis client is closed")
        return proto

    async def aclose(self) -> None:
        """Close the socket and fail whatever still waits. Idempotent."""
        self._closed = True
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        proto, self._proto = self._proto, None
        if proto is not None and proto.usable:
            proto.abort(ConnectionError("the redis client is closed"))
