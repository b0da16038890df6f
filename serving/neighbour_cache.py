"""In-process cache of co-visitation rows, kept exact by Redis invalidation messages.

The server reads the same rows over and over: anchors follow item popularity, so a few
thousand rows answer most requests. This cache keeps the rows read on the request path and
drops a row as soon as Redis says its key changed. The server's request connection turns on
server-assisted client-side caching (``CLIENT TRACKING ON OPTIN``, RESP3; see
:mod:`serving.wire`): every read that fills the cache is preceded by ``CLIENT CACHING YES``,
so Redis remembers that this connection holds that key and pushes an ``invalidate`` message
on the same connection when any client modifies it (or when Redis evicts its tracking
record). A row is therefore never served after its invalidation has been read; the only lag
is the time between the write and the push reaching this process (the same event-loop
iteration on loopback).

Rules that keep it exact:

* A read that misses :meth:`reserve`\\ s its key with a fresh token before it is sent; an
  invalidation pops the key, token or row; :meth:`fill` stores the row only if the key still
  holds its token. So an invalidation that arrives between the read's reply and the moment
  the reader stores it wins (Redis sends the push after the reply on the same connection).
* A new connection (or a lost one) :meth:`clear`\\ s everything: invalidations sent to an old
  connection are lost with it. So does a ``null`` invalidation (FLUSHALL / FLUSHDB).
* Bounded: at most ``max_rows`` entries; the oldest entry goes first (FIFO: popular rows come
  straight back, and a hit costs no bookkeeping).

A row cached for ``n`` neighbours answers any request for ``n`` or fewer. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: a row, best first; a tuple, so that it can be shared by every request that reads it
Row = tuple[tuple[str, float], ...]


class _Token:
    __slots__ = ()


class NeighbourCache:
    """Rows by Redis key; see the module docstring."""

    def __init__(self, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        #: key → (n read, row) or a reservation token
        self._rows: dict[str, tuple[int, Row] | _Token] = {}
        self.hits = 0
        self.misses = 0
        self.invalidations = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: str, n: int) -> Row | None:
        """The cached top ``n`` of ``key``, or None (counted as a hit or a miss)."""
        entry = self._rows.get(key)
        if entry is None or isinstance(entry, _Token):
            self.misses += 1
            return None
        read, row = entry
        if read < n and len(row) >= read:  # cached fewer than asked, and the row may be longer
            self.misses += 1
            return None
        self.hits += 1
        return row if len(row) <= n else row[:n]

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

    def fill(self, key: str, token: _Token, n: int, row: Row) -> None:
        """Store a row read for ``n`` neighbours unless ``key`` was invalidated meanwhile."""
        if self._rows.get(key) is token:
            self._rows[key] = (n, row)

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
