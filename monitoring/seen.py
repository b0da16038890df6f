"""Bounded "seen before?" set for the cold-start ratio: two rotating Bloom filters. Pure.

Each filter is sized for ``capacity / 2`` ids at false-positive rate ``fp_rate``
(≈ 1.2 bytes per id at 1 %). New ids go into the *current* filter; when it holds
``capacity / 2`` ids it becomes the *previous* one and a fresh filter starts. An id counts
as seen when either filter has it, and an id found only in the previous filter is copied
forward, so ids that keep coming back are never forgotten while ids unseen for
``capacity / 2`` to ``capacity`` distinct ids are. False positives make "never seen" read
low by at most ``fp_rate``. Hashing is blake2b (stable across processes), so the state can
be persisted with :meth:`RotatingBloomSet.to_dict` and restored in another process.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]


class RotatingBloomSet:
    """Approximate "seen before?" set with bounded memory (two rotating Bloom filters)."""

    def __init__(self, capacity: int, fp_rate: float = 0.01) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, got {capacity}")
        if not 0 < fp_rate < 1:
            raise ValueError(f"fp_rate must be in (0, 1), got {fp_rate}")
        self.generation_size = capacity // 2
        n = self.generation_size
        self.bits = max(64, math.ceil(-n * math.log(fp_rate) / math.log(2) ** 2))
        self.bits += (-self.bits) % 8
        self.hashes = max(1, round(self.bits / n * math.log(2)))
        self._current = np.zeros(self.bits // 8, dtype=np.uint8)
        self._previous = np.zeros(self.bits // 8, dtype=np.uint8)
        self._count = 0

    def _positions(self, keys: Sequence[str]) -> npt.NDArray[np.uint64]:
        digests = b"".join(blake2b(k.encode(), digest_size=16).digest() for k in keys)
        halves = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
        steps = np.arange(self.hashes, dtype=np.uint64)
        # double hashing h1 + i·h2 (mod 2^64, then mod m); h2 forced odd
        positions = halves[:, :1] + steps[None, :] * (halves[:, 1:] | np.uint64(1))
        return positions % np.uint64(self.bits)

    @staticmethod
    def _contains(filt: npt.NDArray[np.uint8], pos: npt.NDArray[np.uint64]) -> BoolArray:
        byte = (pos >> np.uint64(3)).astype(np.intp)
        mask = np.left_shift(1, (pos & np.uint64(7)).astype(np.uint8)).astype(np.uint8)
        found: BoolArray = ((filt[byte] & mask) != 0).all(axis=1)
        return found

    @staticmethod
    def _insert(filt: npt.NDArray[np.uint8], pos: npt.NDArray[np.uint64]) -> None:
        byte = (pos >> np.uint64(3)).astype(np.intp).ravel()
        mask = np.left_shift(1, (pos & np.uint64(7)).astype(np.uint8)).astype(np.uint8).ravel()
        np.bitwise_or.at(filt, byte, mask)

    def check_and_add(self, keys: Sequence[str]) -> BoolArray:
        """For each key, True when it was never seen before (earlier in ``keys`` counts)."""
        is_new = np.zeros(len(keys), dtype=np.bool_)
        if not keys:
            return is_new
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        unique = list(first)
        index = np.fromiter(first.values(), dtype=np.intp, count=len(first))
        start = 0
        # insert in chunks so a rotation happens at the right point even in a huge batch
        while start < len(unique):
            room = max(1, self.generation_size - self._count)
            chunk = unique[start : start + room]
            pos = self._positions(chunk)
            in_current = self._contains(self._current, pos)
            in_previous = self._contains(self._previous, pos)
            is_new[index[start : start + len(chunk)]] = ~(in_current | in_previous)
            fresh = ~in_current
            if fresh.any():
                self._insert(self._current, pos[fresh])
                self._count += int(fresh.sum())
            if self._count >= self.generation_size:
                self._previous = self._current
                self._current = np.zeros_like(self._previous)
                self._count = 0
            start += len(chunk)
        return is_new

    def to_dict(self) -> dict[str, Any]:
        def pack(arr: npt.NDArray[np.uint8]) -> str:
            return base64.b64encode(zlib.compress(arr.tobytes(), 1)).decode()

        return {
            "generation_size": self.generation_size,
            "bits": self.bits,
            "hashes": self.hashes,
            "count": self._count,
            "current": pack(self._current),
            "previous": pack(self._previous),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RotatingBloomSet:
        try:
            obj = cls.__new__(cls)
            obj.generation_size = int(data["generation_size"])
            obj.bits = int(data["bits"])
            obj.hashes = int(data["hashes"])
            obj._count = int(data["count"])

            def unpack(text: str) -> npt.NDArray[np.uint8]:
                raw = zlib.decompress(base64.b64decode(text))
                arr = np.frombuffer(raw, dtype=np.uint8).copy()
                if arr.size * 8 != obj.bits:
                    raise ValueError("filter size does not match 'bits'")
                return arr

            obj._current = unpack(data["current"])
            obj._previous = unpack(data["previous"])
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise ValueError(f"bad seen-set state: {exc}") from exc
        return obj
