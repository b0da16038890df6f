"""Redis gateway of the operational controls: kill switches, decision traces, erasure.

Every change is atomic with its audit entry (``P:audit``, who = the authenticated principal):

* kill switch on / off — ``HSET`` / ``HDEL`` of ``P:ks`` plus ``XADD`` in one Lua script
  (off for a scope that is not on changes nothing and reports it);
* forget USER — deletes every per-user key (``Keyspace.user_keys``), the user's decision traces
  and removes the user from every session-neighbour index (``sn:{item}``: first the items of
  the user's own lists, then a ``SCAN`` sweep of all of them, since older items have left the
  bounded lists), then audits ``forget_user`` with target ``sha256:<first 16 hex digits>`` of
  the id and the counts — not the id itself, nor anything that was deleted.

Errors and timeouts raise :class:`~core.errors.UnavailableError` (per Redis call).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError

from core.errors import UnavailableError
from schemas.controls import DecisionTrace, KillSwitch, parse_kill_switches, scope_field
from schemas.keyspace import Keyspace, parse_recent
from serving.admin_store import AUDIT_MAXLEN

T = TypeVar("T")
SCAN_COUNT = 1000

# KEYS: kill switches, audit. ARGV: field, switch json, ts, who, maxlen, target
_ON = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'ts', ARGV[3], 'who', ARGV[4],
           'action', 'kill_switch_on', 'target', ARGV[6], 'detail', ARGV[2])
return 1
"""
# KEYS: kill switches, audit. ARGV: field, ts, who, maxlen, target, detail
_OFF = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'ts', ARGV[2], 'who', ARGV[3],
           'action', 'kill_switch_off', 'target', ARGV[5], 'detail', ARGV[6])
return old
"""


def scope_label(tenant: str, surface: str) -> str:
    """Human form of a scope for messages and the audit target: ``tenant=T surface=S``."""
    return f"tenant={tenant or '*'} surface={surface or '*'}"


def erasure_target(user_id: str) -> str:
    """Audit target of an erasure: a digest that confirms a given id without storing it."""
    return "sha256:" + hashlib.sha256(user_id.encode()).hexdigest()[:16]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ControlsStore:
    """Kill switches, traces and erasure over one redis-py asyncio client."""

    def __init__(self, redis: Any, keys: Keyspace, *, timeout_s: float = 5.0) -> None:
        self.redis = redis
        self.keys = keys
        self.timeout_s = timeout_s
        self._on = redis.register_script(_ON)
        self._off = redis.register_script(_OFF)

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            raise UnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    # --- kill switch ----------------------------------------------------------------------------
    async def kill_switches(self) -> list[KillSwitch]:
        raw = await self._call(lambda: self.redis.hgetall(self.keys.kill_switch))
        return parse_kill_switches(raw)

    async def switch_on(self, tenant: str, surface: str, reason: str, who: str) -> KillSwitch:
        """Switch on (or re-state the reason of) the kill switch of a scope; audited."""
        switch = KillSwitch(
            tenant=tenant, surface=surface, reason=reason, who=who, since=time.time()
        )
        args: list[str | int] = [
            switch.field,
            switch.model_dump_json(),
            repr(switch.since),
            who,
            AUDIT_MAXLEN,
            scope_label(tenant, surface),
        ]
        keys = [self.keys.kill_switch, self.keys.audit]
        await self._call(lambda: self._on(keys=keys, args=args))
        return switch

    async def switch_off(self, tenant: str, surface: str, reason: str, who: str) -> bool:
        """Switch a scope's kill switch off; False when it was not on (nothing changed)."""
        detail = orjson.dumps({"tenant": tenant, "surface": surface, "reason": reason}).decode()
        args: list[str | int] = [
            scope_field(tenant, surface),
            repr(time.time()),
            who,
            AUDIT_MAXLEN,
            scope_label(tenant, surface),
            detail,
        ]
        keys = [self.keys.kill_switch, self.keys.audit]
        old = await self._call(lambda: self._off(keys=keys, args=args))
        return old is not None

    # --- decision traces ------------------------------------------------------------------------
    async def trace(self, request_id: str) -> DecisionTrace | None:
        """The stored trace of a request; None when unknown or expired."""
        raw = await self._call(lambda: self.redis.get(self.keys.trace(request_id)))
        if raw is None:
            return None
        try:
            return DecisionTrace.model_validate_json(raw)
        except ValueError:
            return None

    # --- erasure --------------------------------------------------------------------------------
    async def forget(self, user_id: str, who: str) -> tuple[int, int]:
        """Erase one user (or session) id; ``(keys deleted, index entries removed)``. Audited."""
        keys = self.keys

        async def lists() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(keys.user_recent(user_id), 0, -1)
            pipe.zrange(keys.user_seen(user_id), 0, -1)
            pipe.lrange(keys.session_recent(user_id), 0, -1)
            pipe.smembers(keys.user_traces(user_id))
            result: list[Any] = await pipe.execute()
            return result

        recent, seen, session, trace_ids = await self._call(lists)
        items = {item for _, item in parse_recent([*recent, *session])}
        items |= {_text(i) for i in seen}
        rids = sorted(_text(r) for r in trace_ids)
        doomed = [*keys.user_keys(user_id), *(keys.trace(r) for r in rids)]

        async def delete() -> list[Any]:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(*doomed)
            if rids:
                pipe.zrem(keys.traces, *rids)
            for item in sorted(items):
                pipe.zrem(keys.session_index(item), user_id)
            result: list[Any] = await pipe.execute()
            return result

        replies = await self._call(delete)
        deleted = int(replies[0])
        removed = sum(int(r) for r in replies[2 if rids else 1 :])
        removed += await self._sweep_session_indexes(user_id)
        detail = orjson.dumps({"keys_deleted": deleted, "entries_removed": removed}).decode()

        async def audit() -> Any:
            fields = {
                "ts": repr(time.time()),
                "who": who,
                "action": "forget_user",
                "target": erasure_target(user_id),
                "detail": detail,
            }
            return await self.redis.xadd(keys.audit, fields, maxlen=AUDIT_MAXLEN, approximate=True)

        await self._call(audit)
        return deleted, removed

    async def _sweep_session_indexes(self, user_id: str) -> int:
        """ZREM the user from every ``sn:{item}`` (SCAN in pages of ``SCAN_COUNT``)."""
        removed = 0
        cursor = 0
        while True:
            cursor, found = await self._call(functools.partial(self._scan_page, cursor))
            if found:
                zrem = functools.partial(self._zrem, list(found), user_id)
                removed += sum(int(r) for r in await self._call(zrem))
            if int(cursor) == 0:
                return removed

    async def _scan_page(self, cursor: int) -> Any:
        return await self.redis.scan(
            cursor, match=self.keys.session_index_pattern, count=SCAN_COUNT
        )

    async def _zrem(self, names: list[Any], user_id: str) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.zrem(name, user_id)
        result: list[Any] = await pipe.execute()
        return result
