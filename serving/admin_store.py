"""Redis gateway of the Admin service: rules, experiment config and the audit trail.

Every change is one atomic step (a Lua script or MULTI): store / delete the value, bump
``rules_version`` (servers reload rules when it moves) and append an audit entry to the
``audit`` stream (``XADD MAXLEN ~ 10000``; fields ``ts who action target detail``).
Errors and timeouts raise :class:`~core.errors.UnavailableError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from core.errors import UnavailableError
from schemas.keyspace import Keyspace
from schemas.rules import AuditAction, AuditEntry, ExperimentConfig, Rule

T = TypeVar("T")
AUDIT_MAXLEN = 10_000

# KEYS: rules, rules_version, audit. ARGV: id, rule json, ts, who, maxlen
_CREATE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'ts', ARGV[3], 'who', ARGV[4],
           'action', 'create_rule', 'target', ARGV[1], 'detail', ARGV[2])
return 1
"""
# KEYS: rules, rules_version, audit. ARGV: id, ts, who, maxlen
_DELETE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'ts', ARGV[2], 'who', ARGV[3],
           'action', 'delete_rule', 'target', ARGV[1], 'detail', old)
return old
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AdminStore:
    """Writes and audit reads of the serving-owned keys."""

    def __init__(self, redis: aioredis.Redis, keys: Keyspace, *, timeout_s: float = 5.0) -> None:
        self.redis = redis
        self.keys = keys
        self.timeout_s = timeout_s
        self.audit_maxlen = AUDIT_MAXLEN
        self._create = redis.register_script(_CREATE)
        self._delete = redis.register_script(_DELETE)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` within the timeout; Redis errors raise UnavailableError."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            raise UnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    @property
    def _rule_keys(self) -> list[str]:
        return [self.keys.rules, self.keys.rules_version, self.keys.audit]

    async def create_rule(self, rule: Rule, who: str) -> bool:
        """Store a new rule; False when a rule with that id exists (nothing changed)."""
        args: list[str | int] = [
            rule.id,
            rule.model_dump_json(),
            repr(time.time()),
            who,
            AUDIT_MAXLEN,
        ]
        created = await self.call(lambda: self._create(keys=self._rule_keys, args=args))
        return bool(created)

    async def delete_rule(self, rule_id: str, who: str) -> str | None:
        """Delete a rule; returns its stored JSON, or None when there was none with that id."""
        args: list[str | int] = [rule_id, repr(time.time()), who, AUDIT_MAXLEN]
        old = await self.call(lambda: self._delete(keys=self._rule_keys, args=args))
        return None if old is None else _text(old)

    async def list_rules(self) -> list[Rule]:
        """Every readable stored rule, oldest first."""
        raw = await self.call(lambda: self.redis.hgetall(self.keys.rules))
        rules: list[Rule] = []
        for value in raw.values():
            try:
                rules.append(Rule.model_validate_json(_text(value)))
            except ValidationError:
                continue
        return sorted(
            rules, key=lambda r: (r.created_at.timestamp() if r.created_at else 0.0, r.id)
        )

    async def set_experiment(self, experiment: ExperimentConfig, who: str) -> None:
        """Store the experiment config (servers pick it up on their next refresh) and audit."""
        detail = experiment.model_dump_json()

        async def run() -> Any:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.keys.experiments, detail)
            self._xadd(pipe, "set_experiment", experiment.name, detail, who)
            return await pipe.execute()

        await self.call(run)

    def _xadd(self, pipe: Any, action: AuditAction, target: str, detail: str, who: str) -> None:
        fields = {"ts": repr(time.time()), "who": who, "action": action, "target": target}
        fields["detail"] = detail
        pipe.xadd(self.keys.audit, fields, maxlen=AUDIT_MAXLEN, approximate=True)

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        raw = await self.call(lambda: self.redis.xrevrange(self.keys.audit, count=limit))
        entries: list[AuditEntry] = []
        for entry_id, fields in raw or ():
            data = {_text(k): _text(v) for k, v in (fields or {}).items()}
            try:
                entries.append(
                    AuditEntry.model_validate(
                        {
                            "id": _text(entry_id),
                            "ts": float(data.get("ts", "0")),
                            "who": data.get("who", ""),
                            "action": data.get("action", ""),
                            "target": data.get("target", ""),
                            "detail": data.get("detail", ""),
                        }
                    )
                )
            except (ValidationError, ValueError):
                continue
        return entries
