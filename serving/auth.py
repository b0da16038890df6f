"""Authenticated roles of the Admin service: principals, their hashed tokens, role checks.

A caller sends metadata ``authorization: Bearer <token>``; the token names one principal
(``name``, role ``viewer < operator < admin``) and the audit trail records that name, never
a header the caller writes. Principals live in Redis (:class:`PrincipalStore`); the
``STREAMREC_ADMIN_TOKEN`` setting is the ``bootstrap-admin`` principal (checked in memory,
so it works while Redis is down and needs no set-up).

Tokens are ``sr_`` + 256 random bits (``secrets.token_urlsafe(32)``), shown once, stored only
as their SHA-256. A fast hash is enough here and is the right choice: the token is random with
256 bits of entropy, so a stolen hash cannot be brute-forced, and a salted slow KDF (scrypt,
argon2) only adds protection to low-entropy *passwords* while costing tens of milliseconds of
CPU per call on the event loop and making lookup by hash impossible (every record would have to
be tried). Revoked principals keep their record (``revoked_at``), so their token is refused
with a message naming the revocation rather than as unknown.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from pydantic import SecretStr, ValidationError

from core.errors import ConfigError
from core.settings import setting_default
from schemas.admin import BOOTSTRAP_PRINCIPAL, PrincipalRecord, Role
from schemas.keyspace import Keyspace
from serving.admin_store import AdminStore

__all__ = [
    "BOOTSTRAP_PRINCIPAL",
    "DEFAULT_ADMIN_TOKEN",
    "MIN_TOKEN_CHARS",
    "AuthError",
    "Authenticator",
    "Principal",
    "PrincipalStore",
    "Role",
    "check_admin_token",
    "new_token",
    "token_hash",
]

#: the declared default of STREAMREC_ADMIN_TOKEN: accepted on loopback only (dev)
DEFAULT_ADMIN_TOKEN: str = setting_default("admin_token").get_secret_value()
MIN_TOKEN_CHARS = 16
TOKEN_PREFIX = "sr_"
BEARER = "bearer "

# KEYS: principals, tokens, audit. ARGV: name, record json, token hash, ts, who, maxlen
_ADD = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and not string.find(old, '"revoked_at":[0-9]') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'ts', ARGV[4], 'who', ARGV[5],
           'action', 'add_principal', 'target', ARGV[1], 'detail', ARGV[7])
return 1
"""
# KEYS: principals, audit. ARGV: name, revoked record json, ts, who, maxlen, detail
_REVOKE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
if string.find(old, '"revoked_at":[0-9]') then return old end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'ts', ARGV[3], 'who', ARGV[4],
           'action', 'revoke_principal', 'target', ARGV[1], 'detail', ARGV[6])
return ARGV[2]
"""
# KEYS: tokens, principals. ARGV: token hash
_LOOKUP = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return false end
return redis.call('HGET', KEYS[2], name)
"""


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one admin call."""

    name: str
    role: Role


class AuthError(Exception):
    """A refused call: ``kind`` is ``unauthenticated`` or ``permission_denied``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """SHA-256 hex of a token: the only form in which tokens are stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(grpc_addr: str) -> bool:
    """True when ``HOST:PORT`` listens on a loopback address only."""
    host = grpc_addr.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_admin_token(token: SecretStr, grpc_addr: str) -> None:
    """Refuse (ConfigError, one line) a default, empty or short token off loopback."""
    value = token.get_secret_value()
    if is_loopback(grpc_addr):
        return
    if value == DEFAULT_ADMIN_TOKEN:
        problem = f"is the default {DEFAULT_ADMIN_TOKEN!r}"
    elif len(value) < MIN_TOKEN_CHARS:
        problem = f"is shorter than {MIN_TOKEN_CHARS} characters"
    else:
        return
    raise ConfigError(
        f"STREAMREC_ADMIN_TOKEN {problem}: refusing to listen on {grpc_addr} "
        "(set a random token, e.g. `openssl rand -hex 32`, or listen on 127.0.0.1 for dev)"
    )


def bearer_token(value: str | bytes | None) -> str | None:
    """The token of an ``authorization`` metadata value ``Bearer TOKEN``; None if absent."""
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if not text.lower().startswith(BEARER):
        return None
    token = text[len(BEARER) :].strip()
    return token or None


class PrincipalStore:
    """Redis gateway of principals: add (returns the new token once), list, revoke, lookup."""

    def __init__(self, store: AdminStore) -> None:
        self.admin = store
        redis = store.redis
        self._add = redis.register_script(_ADD)
        self._revoke = redis.register_script(_REVOKE)
        self._lookup = redis.register_script(_LOOKUP)

    @property
    def keys(self) -> Keyspace:
        return self.admin.keys

    async def add(self, name: str, role: Role, by: str) -> tuple[PrincipalRecord, str] | None:
        """A new principal and its token; None when an active principal has that name.

        ``name`` must already be valid (:class:`PrincipalRecord` raises ValueError else).
        """
        if name == BOOTSTRAP_PRINCIPAL:
            raise ValueError(f"{BOOTSTRAP_PRINCIPAL!r} is STREAMREC_ADMIN_TOKEN's principal")
        token = new_token()
        now = time.time()
        try:
            record = PrincipalRecord(
                name=name,
                role=role.label,
                token_sha256=token_hash(token),
                created_by=by,
                created_at=now,
            )
        except ValidationError as exc:
            raise ValueError(f"bad principal name {name!r}: 1-64 of A-Z a-z 0-9 . _ @ -") from exc
        detail = record.model_dump_json(include={"name", "role"})
        keys = [self.keys.principals, self.keys.principal_tokens, self.keys.audit]
        args: list[str | int] = [
            name,
            record.model_dump_json(),
            record.token_sha256,
            repr(now),
            by,
            self.admin.audit_maxlen,
            detail,
        ]
        added = await self.admin.call(lambda: self._add(keys=keys, args=args))
        return (record, token) if added else None

    async def revoke(self, name: str, by: str) -> PrincipalRecord | None:
        """Mark a principal revoked (its token is refused from now on); None if unknown."""
        current = await self.get(name)
        if current is None:
            return None
        if current.revoked:
            return current
        now = time.time()
        revoked = current.model_copy(update={"revoked_at": now, "revoked_by": by})
        keys = [self.keys.principals, self.keys.audit]
        args: list[str | int] = [
            name,
            revoked.model_dump_json(),
            repr(now),
            by,
            self.admin.audit_maxlen,
            revoked.model_dump_json(include={"name", "role"}),
        ]
        raw = await self.admin.call(lambda: self._revoke(keys=keys, args=args))
        return None if raw is None else PrincipalRecord.model_validate_json(raw)

    async def get(self, name: str) -> PrincipalRecord | None:
        raw = await self.admin.call(lambda: self.admin.redis.hget(self.keys.principals, name))
        return None if raw is None else _record(raw)

    async def list(self) -> list[PrincipalRecord]:
        """Every readable principal (revoked ones included), by name."""
        raw = await self.admin.call(lambda: self.admin.redis.hgetall(self.keys.principals))
        records = [r for r in (_record(v) for v in raw.values()) if r is not None]
        return sorted(records, key=lambda r: r.name)

    async def lookup(self, digest: str) -> PrincipalRecord | None:
        """The principal whose token has this SHA-256 (revoked or not); None if unknown."""
        keys = [self.keys.principal_tokens, self.keys.principals]
        raw = await self.admin.call(lambda: self._lookup(keys=keys, args=[digest]))
        return None if raw is None else _record(raw)


def _record(raw: str | bytes) -> PrincipalRecord | None:
    try:
        return PrincipalRecord.model_validate_json(raw)
    except ValidationError:
        return None


class Authenticator:
    """Turns a bearer token into a :class:`Principal`, and checks its role for a call."""

    def __init__(self, principals: PrincipalStore, bootstrap_token: SecretStr) -> None:
        self.principals = principals
        value = bootstrap_token.get_secret_value()
        # an empty setting disables the bootstrap principal (never matches "Bearer ")
        self._bootstrap = token_hash(value).encode() if value else None

    async def authenticate(self, token: str | None) -> Principal:
        """The principal of ``token``; AuthError(unauthenticated) when missing, unknown or
        revoked; UnavailableError when Redis must be asked and does not answer."""
        if token is None:
            raise AuthError(
                "unauthenticated", "missing admin token (metadata authorization: Bearer TOKEN)"
            )
        digest = token_hash(token)
        if self._bootstrap is not None and hmac.compare_digest(digest.encode(), self._bootstrap):
            return Principal(BOOTSTRAP_PRINCIPAL, Role.ADMIN)
        record = await self.principals.lookup(digest)
        if record is None or not hmac.compare_digest(record.token_sha256, digest):
            if record is not None and record.revoked:
                raise AuthError(
                    "unauthenticated", f"token of principal {record.name!r} was revoked"
                )
            raise AuthError(
                "unauthenticated",
                "unknown admin token" if record is None else "token was replaced (revoked)",
            )
        if record.revoked:
            raise AuthError("unauthenticated", f"token of principal {record.name!r} was revoked")
        return Principal(record.name, Role.parse(record.role))

    @staticmethod
    def authorise(principal: Principal, needed: Role, what: str) -> None:
        """AuthError(permission_denied) unless ``principal`` holds at least ``needed``."""
        if principal.role < needed:
            raise AuthError(
                "permission_denied",
                f"principal {principal.name!r} ({principal.role.label}) may not {what}: "
                f"needs {needed.label}",
            )
