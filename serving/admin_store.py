"""Redis gateway of the Admin service: versioned rules / experiments / config, and the audit.

Every change of the serving config is one optimistic transaction (``WATCH`` the live keys,
read them as a :class:`~schemas.admin.Snapshot`, compute the new snapshot, ``MULTI``): it
writes the live keys the servers read (``rules`` + ``rules_version`` INCR, ``exp`` — the
effective experiment —, ``exps``, ``cfg``), stores the new :class:`~schemas.admin.ConfigVersion`
(whole snapshot, author, reason, diff) under ``cfgv``, and appends an audit entry to the
``audit`` stream (``XADD MAXLEN ~ 10000``; fields ``ts who action target detail version
reason``), all or nothing. The first change also records version 1, the state before it
(action ``baseline``), so that it too can be rolled back. The newest ``admin_versions_kept``
versions are kept. Errors and timeouts raise :class:`~core.errors.UnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError, WatchError

from core.errors import UnavailableError
from core.settings import setting_default
from schemas.admin import ConfigVersion, ExperimentRecord, Snapshot
from schemas.keyspace import Keyspace
from schemas.rules import AuditAction, AuditEntry, Rule
from serving.config_versions import changed_kinds, diff, effective_experiment

T = TypeVar("T")
AUDIT_MAXLEN = 10_000
COMMIT_ATTEMPTS = 20
SYSTEM_AUTHOR = "system"


class NoChange(Exception):
    """The change would leave every document as it is (nothing is written)."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _rules_of(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for value in raw.values():
        try:
            rule = Rule.model_validate_json(_text(value))
        except ValidationError:
            continue  # unreadable: servers ignore it too (logged there)
        rules[rule.id] = rule.model_dump(mode="json")
    return rules


def _experiments_of(raw: object) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    try:
        doc = json.loads(_text(raw))
        return {
            name: ExperimentRecord.model_validate_json(json.dumps(record)).model_dump(mode="json")
            for name, record in doc.items()
        }
    except (ValueError, AttributeError):
        return {}


def experiment_records(snapshot: Snapshot) -> dict[str, ExperimentRecord]:
    """The experiments document as records."""
    return {
        name: ExperimentRecord.model_validate_json(json.dumps(record))
        for name, record in snapshot.experiments.items()
    }


def rules_of(snapshot: Snapshot) -> list[Rule]:
    return [Rule.model_validate_json(json.dumps(rule)) for rule in snapshot.rules.values()]


class AdminStore:
    """Writes and audit reads of the serving-owned keys."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keyspace,
        *,
        timeout_s: float = 5.0,
        versions_kept: int = setting_default("admin_versions_kept"),
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.timeout_s = timeout_s
        self.versions_kept = versions_kept
        self.audit_maxlen = AUDIT_MAXLEN
        self._commits = asyncio.Lock()

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()`` within the timeout; Redis errors raise UnavailableError."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            raise UnavailableError(f"redis: {type(exc).__name__}: {exc}") from exc

    # --- versioned config -------------------------------------------------------------------
    @property
    def _live_keys(self) -> list[str]:
        k = self.keys
        return [k.rules, k.experiment_records, k.runtime_config, k.config_version_seq]

    async def snapshot(self) -> tuple[int, Snapshot]:
        """The newest version number (0 = none yet) and the live documents."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(self.keys.rules)
        pipe.get(self.keys.experiment_records)
        pipe.get(self.keys.runtime_config)
        pipe.get(self.keys.config_version_seq)
        rules, exps, cfg, seq = await self.call(pipe.execute)
        return int(seq or 0), _snapshot(rules, exps, cfg)

    async def commit(
        self,
        *,
        author: str,
        reason: str,
        action: AuditAction,
        target: str,
        change: Callable[[Snapshot], Snapshot],
        detail: Callable[[Snapshot, Snapshot], str] | None = None,
    ) -> ConfigVersion:
        """Apply ``change`` to the live documents as one new version (retried on a concurrent
        change). ``change`` may raise (nothing is written); an unchanged result raises
        :class:`NoChange`. ``detail`` gives the audit entry's detail (default: the version's
        number and diff size as JSON)."""
        async with self._commits:  # one at a time per process; WATCH across processes
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    return await self.call(
                        lambda: self._commit_once(author, reason, action, target, change, detail)
                    )
                except UnavailableError as exc:
                    if not isinstance(exc.__cause__, WatchError):
                        raise
                await asyncio.sleep(random.uniform(0.0, 0.01 * (attempt + 1)))
        raise UnavailableError(f"the config changed concurrently {COMMIT_ATTEMPTS} times")

    async def _commit_once(
        self,
        author: str,
        reason: str,
        action: AuditAction,
        target: str,
        change: Callable[[Snapshot], Snapshot],
        detail: Callable[[Snapshot, Snapshot], str] | None,
    ) -> ConfigVersion:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*self._live_keys)
            rules_raw = await pipe.hgetall(k.rules)
            exps_raw = await pipe.get(k.experiment_records)
            cfg_raw = await pipe.get(k.runtime_config)
            seq = int(await pipe.get(k.config_version_seq) or 0)
            current = _snapshot(rules_raw, exps_raw, cfg_raw)
            new = change(current)
            changes = diff(current, new)
            if not changes:
                raise NoChange("nothing to change: the documents would stay as they are")
            now = time.time()
            versions: list[ConfigVersion] = []
            if seq == 0:
                seq = 1
                versions.append(
                    ConfigVersion(
                        version=1,
                        ts=now,
                        author=SYSTEM_AUTHOR,
                        reason="the state before the first versioned change",
                        action="baseline",
                        kinds=[],
                        state=current,
                    )
                )
            kinds = changed_kinds(changes)
            version = ConfigVersion(
                version=seq + 1,
                ts=now,
                author=author,
                reason=reason,
                action=action,
                kinds=kinds,
                target=target,
                diff=changes,
                state=new,
            )
            versions.append(version)
            pipe.multi()  # type: ignore[no-untyped-call]
            if "rules" in kinds:
                pipe.delete(k.rules)
                if new.rules:
                    pipe.hset(
                        k.rules, mapping={i: r.model_dump_json() for i, r in _rules(new).items()}
                    )
                pipe.incr(k.rules_version)
            if "experiments" in kinds:
                pipe.set(k.experiment_records, json.dumps(new.experiments, sort_keys=True))
                effective = effective_experiment(experiment_records(new))
                if effective is None:
                    pipe.delete(k.experiments)
                else:
                    pipe.set(k.experiments, effective.model_dump_json())
            if "config" in kinds:
                if new.config:
                    pipe.set(k.runtime_config, json.dumps(new.config, sort_keys=True))
                else:
                    pipe.delete(k.runtime_config)
            for v in versions:
                pipe.hset(k.config_versions, str(v.version), v.model_dump_json())
            if version.version > self.versions_kept:
                pipe.hdel(k.config_versions, str(version.version - self.versions_kept))
            pipe.set(k.config_version_seq, version.version)
            text = detail(current, new) if detail is not None else None
            text = text or json.dumps({"version": version.version, "changes": len(changes)})
            self._xadd(pipe, action, target, text, author, version=version.version, reason=reason)
            await pipe.execute()
        return version

    async def version(self, number: int) -> ConfigVersion | None:
        """One stored version, or None (never made, or older than the kept ones)."""
        raw = await self.call(lambda: self.redis.hget(self.keys.config_versions, str(number)))
        return None if raw is None else ConfigVersion.model_validate_json(_text(raw))

    async def versions(self, limit: int, kind: str | None) -> tuple[int, list[ConfigVersion]]:
        """The newest version number and up to ``limit`` versions (of ``kind``), newest first."""
        seq = int(await self.call(lambda: self.redis.get(self.keys.config_version_seq)) or 0)
        found: list[ConfigVersion] = []
        batch = 100
        top = seq
        while top >= 1 and len(found) < limit:
            numbers = [str(n) for n in range(top, max(0, top - batch), -1)]
            raws = await self.call(
                lambda ns=numbers: self.redis.hmget(self.keys.config_versions, ns)  # type: ignore[misc]
            )
            for raw in raws:
                if raw is None:
                    continue
                v = ConfigVersion.model_validate_json(_text(raw))
                if kind is None or kind in v.kinds:
                    found.append(v)
                    if len(found) >= limit:
                        break
            top -= batch
        return seq, found

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

    def _xadd(
        self,
        pipe: Any,
        action: AuditAction,
        target: str,
        detail: str,
        who: str,
        *,
        version: int = 0,
        reason: str = "",
    ) -> None:
        fields: dict[str, str | int] = {
            "ts": repr(time.time()),
            "who": who,
            "action": action,
            "target": target,
            "detail": detail,
        }
        if version:
            fields["version"] = version
            fields["reason"] = reason
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
                            "version": int(data.get("version", "0")),
                            "reason": data.get("reason", ""),
                        }
                    )
                )
            except (ValidationError, ValueError):
                continue
        return entries


def _snapshot(rules_raw: dict[Any, Any], exps_raw: object, cfg_raw: object) -> Snapshot:
    config: dict[str, Any] = {}
    if cfg_raw is not None:
        try:
            loaded = json.loads(_text(cfg_raw))
            config = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            config = {}
    return Snapshot(
        rules=_rules_of(rules_raw), experiments=_experiments_of(exps_raw), config=config
    )


def _rules(snapshot: Snapshot) -> dict[str, Rule]:
    return {rule.id: rule for rule in rules_of(snapshot)}
