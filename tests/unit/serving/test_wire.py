"""Pure parts of the request path's Redis access: URL parsing, reply shapes, RESP3 pushes."""

from __future__ import annotations

import asyncio

import pytest

from serving.state_reader import _pairs
from serving.wire import WireClient, _Batch, _Protocol


def test_urls_the_lean_connection_speaks() -> None:
    tcp = WireClient.from_url(
        "redis://us%40er:p%3Ass@cache.local:6380/3", connect_timeout_s=0.5, socket_timeout_s=2.0
    )
    assert tcp is not None
    assert (tcp.host, tcp.port, tcp.db, tcp.path) == ("cache.local", 6380, 3, None)
    assert (tcp.username, tcp.password) == ("us@er", "p:ss")
    assert (tcp.connect_timeout_s, tcp.socket_timeout_s) == (0.5, 2.0)
    plain = WireClient.from_url("redis://localhost", connect_timeout_s=1, socket_timeout_s=1)
    assert plain is not None
    assert (plain.port, plain.db, plain.username, plain.password) == (6379, 0, None, None)
    query_db = WireClient.from_url("redis://h:1?db=4", connect_timeout_s=1, socket_timeout_s=1)
    assert query_db is not None and query_db.db == 4
    unix = WireClient.from_url("unix:///run/r.sock?db=2", connect_timeout_s=1, socket_timeout_s=1)
    assert unix is not None and (unix.path, unix.db) == ("/run/r.sock", 2)


def test_tls_urls_are_left_to_redis_py() -> None:
    assert WireClient.from_url("rediss://h:1/0", connect_timeout_s=1, socket_timeout_s=1) is None


@pytest.mark.parametrize(
    "raw",
    [
        [["b", 2.5], ["c", 1.0]],  # RESP3 (lean connection)
        ["b", "2.5", "c", "1"],  # RESP2 decoded
        [b"b", b"2.5", b"c", b"1"],  # RESP2 bytes
        [("b", 2.5), ("c", 1.0)],  # redis-py pairs
        [(b"b", 2.5), (b"c", "1")],
    ],
)
def test_withscores_replies_of_every_shape_give_the_same_pairs(raw: list[object]) -> None:
    pairs = _pairs(raw)
    assert pairs == [("b", 2.5), ("c", 1.0)]
    assert all(type(p) is tuple and type(p[1]) is float for p in pairs)
    assert _pairs([]) == []


async def test_pushes_between_replies_go_to_on_push_not_to_a_waiting_batch() -> None:
    """An invalidation push arriving among replies must not be taken for one of them."""
    pushes: list[list[object]] = []
    lost: list[bool] = []
    proto = _Protocol(pushes.append, lambda: lost.append(True))
    loop = asyncio.get_running_loop()
    batch = _Batch(loop.create_future(), 2, 0.0)
    proto.pending.append(batch)
    proto.data_received(
        b"+OK\r\n"  # the batch's first reply
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$4\r\ncv:a\r\n"  # a push in between
        b":7\r\n"  # the batch's second reply
        b">2\r\n$10\r\ninvalidate\r\n_\r\n"  # FLUSHALL: a null key list
    )
    assert batch.future.result() == ["OK", 7]
    assert pushes == [["invalidate", ["cv:a"]], ["invalidate", None]]
    assert not proto.pending and not proto.closed
    proto.abort(ConnectionError("test"))
    assert lost == [True]  # the cache is told the connection is gone
