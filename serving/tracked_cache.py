"""In-process caches of Redis reads, kept exact by Redis invalidation messages.

The server reads the same keys over and over: co-visitation rows (anchors follow item
popularity, so a few thousand rows answer most requests) and the recent and seen items of a
user who asks again before acting again (several slots on one page, pagination, reloads).
A :class:`TrackedCache` keeps what the request path read and drops an entry as soon as
Redis says its key changed. The server's request connection turns on
server-assisted client-side caching (``CLIENT TRACKING ON OPTIN``, RESP3; see
:mod:`serving.wire`): every read that fills the cache is preceded by ``CLIENT CACHING YES``,
so Redis remembers that this connection holds that key and pushes an ``invalidate`` message
on the same connection when any client modifies it (or when Redis evicts its tracking
record). An entry is therefore never served after its invalidation has been read; the only lag
is the time between the write and the push reaching this process (the same event-loop
iteration on loopback).

Rules that keep it exact:

* A read that misses :meth:`reserve`\\ s its key with a fresh token before it is sent; an
  invalidation pops the key, token or value; :meth:`fill` stores the value only if the key still
  holds its token. So an invalidation that arrives between the read's reply and the moment
  the reader stores it wins (Redis sends the push after the reply on the same connection).
* A new connection (or a lost one) :meth:`clear`\\ s everything: invalidations sent to an old
  connection are lost with it. So does a ``null`` invalidation (FLUSHALL / FLUSHDB).
* Bounded: at most ``max_rows`` entries; the oldest entry goes first (FIFO: popular rows come
  straight back, and a hit costs no bookkeeping).

Entries are the first ``n`` elements of a key (a ZREVRANGE or LRANGE of ``0 .. n-1``; a whole
key is read with ``n`` = :data:`WHOLE`): an entry read for ``n`` answers a request for ``n``
or fewer, and for more when it held fewer than ``n`` (the key was shorter). Values are
immutable (tuples, frozensets) so that every request can share them. No I/O here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence, Sized
from typing import Generic, TypeVar

#: ``n`` of a read that returned the whole key (ZRANGE 0 -1)
WHOLE = sys.maxsize

V = TypeVar("V", bound=Sized)


class _Token:
    __slots__ = ()


class TrackedCache(Generic[V]):
    """Values by Redis key; see the module docstring."""

    def __init__(self, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        #: key → (n read, value) or a reservation token
        self._rows: dict[str, tuple[int, V] | _Token] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._rows)

    def counts(self) -> dict[str, int]:
        """Lookups by result (``hit``, ``miss``) and entries ``invalidated``, so far."""
        return {"hit": self.hits, "miss": self.misses, "invalidated": self.invalidations}

    def lookup(self, key: str, n: int) -> V | None:
        """The value read for ``key`` if it holds its first ``n`` elements, else None.

        Counted as a hit or a miss. The value may hold more than ``n`` elements.
        """
        entry = self._rows.get(key)
        if entry is None or isinstance(entry, _Token):
            self.misses += 1
            return None
        read, value = entry
        if read < n and len(value) >= read:  # cached fewer than asked, and the key may be longer
            self.misses += 1
            return None
        self.hits += 1
        return value

    def reserve(self, keys: Sequence[str]) -> list[_Token]:
        """Mark ``keys`` as being read; pass the tokens back to :meth:`fill`."""
        rows = self._rows
        tokens = []
        for key in keys:
            token = _Token()
            rows.pop(key, None)  # re-inserted last: the FIFO order follows the newest read
            rows[key] = token
            tokens.append(token)
        self._trim()
        return tokens

    def fill(self, key: str, token: _Token, n: int, value: V) -> None:
        """Store a value read for ``n`` elements unless ``key`` was invalidated meanwhile."""
        if self._rows.get(key) is token:
            self._rows[key] = (n, value)

    def invalidate(self, keys: Iterable[str] | None) -> None:
        """Drop ``keys`` (None: everything, as Redis sends after FLUSHALL)."""
        if keys is None:
            self.clear()
            return
        rows = self._rows
        for key in keys:
            if rows.pop(key, None) is not None:
                self.invalidations += 1

    def clear(self) -> None:
        """Forget everything (a new connection: invalidations of the old one are lost)."""
        self._rows.clear()
        self.resets += 1

    def _trim(self) -> None:
        rows = self._rows
        while len(rows) > self.max_rows:
            del rows[next(iter(rows))]
