"""API keys of ``Recommender`` callers: stored as SHA-256 digests, looked up by presented key.

The setting ``serving_api_keys`` lists ``NAME:SHA256HEX`` entries (make one with
``KEY=$(openssl rand -hex 32); printf %s "$KEY" | sha256sum``). A caller
sends its key in the ``x-api-key`` metadata; the server hashes it and finds the name, which
then identifies the caller (rate limit, logs). Keys are random secrets, so an unsalted
SHA-256 is enough to keep the settings from holding usable keys. No grpc import.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["API_KEY_HEADER", "ApiKeys", "hash_key"]

API_KEY_HEADER = "x-api-key"
MAX_KEY_LEN = 256


def hash_key(key: str) -> str:
    """Hex SHA-256 of an API key, as written in ``serving_api_keys``."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeys:
    """Digest → caller name. Empty: no key is required (:attr:`required` is False)."""

    by_digest: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> ApiKeys:
        """From ``NAME:SHA256HEX`` entries (validated by the settings)."""
        by_digest: dict[str, str] = {}
        for entry in entries:
            name, _, digest = entry.rpartition(":")
            by_digest[digest.lower()] = name
        return cls(by_digest)

    @property
    def required(self) -> bool:
        return bool(self.by_digest)

    def caller(self, presented: str | None) -> str | None:
        """The name of the key ``presented``, or None when missing or unknown."""
        if not presented or len(presented) > MAX_KEY_LEN:
            return None
        digest = hash_key(presented)
        for known, name in self.by_digest.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                return name
        return None
