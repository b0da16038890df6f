"""Kill switches and the holdback: which requests the safe baseline answers (no grpc import).

:class:`Controls` keeps the kill switches in memory; one background task reads them (one
``HGETALL P:ks``) every ``kill_switch_poll_s`` (≤ 1.5 s), so a switch reaches every server
within that plus one Redis round trip (the promise is 2 s). When Redis cannot be read the last
list stays in force (a switch that is on stays on) and the failure is logged once per outage.

Holdback: ``in_holdback(tenant, unit)`` is true for a hash-stable share of the units
(users or sessions) of each tenant: SHA-256 of ``[salt, tenant, unit]`` (JSON, so no two
triples share a hash input) mapped to [0, 1) and compared with ``holdback_share``. It draws
independently of the experiment bucketing (another salt and input).

Per request both lookups are in-memory and O(number of switches on).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any

import orjson
from redis.exceptions import RedisError

from core.settings import Settings
from schemas.controls import KillSwitch, parse_kill_switches
from schemas.keyspace import Keyspace
from serving import metrics

log = logging.getLogger("streamrec.serving.controls")
_SCALE = float(2**64)


def holdback_position(salt: str, tenant: str, unit: str) -> float:
    """Deterministic position of ``unit`` of ``tenant`` in [0, 1) for the holdback draw."""
    digest = hashlib.sha256(orjson.dumps([salt, tenant, unit])).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


class Controls:
    """The kill switches as last read, and the holdback draw."""

    def __init__(
        self,
        redis: Any = None,
        keys: Keyspace | None = None,
        *,
        poll_s: float = 0.5,
        timeout_s: float = 1.0,
        holdback_share: float = 0.0,
        holdback_salt: str = "holdback",
    ) -> None:
        if not 0.0 <= holdback_share <= 1.0:
            raise ValueError(f"holdback_share must be in [0, 1], got {holdback_share}")
        self.redis = redis
        self.keys = keys
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.holdback_share = holdback_share
        self.holdback_salt = holdback_salt
        self.switches: tuple[KillSwitch, ...] = ()
        self.read_ok = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, redis: Any, settings: Settings) -> Controls:
        return cls(
            redis,
            Keyspace(settings.key_prefix),
            poll_s=settings.kill_switch_poll_s,
            timeout_s=min(settings.network_timeout_s, settings.kill_switch_poll_s * 2),
            holdback_share=settings.holdback_share,
            holdback_salt=settings.holdback_salt,
        )

    # --- per request ----------------------------------------------------------------------------
    def killed(self, tenant: str, surface: str) -> KillSwitch | None:
        """The kill switch covering (tenant, surface), or None."""
        for switch in self.switches:
            if switch.covers(tenant, surface):
                return switch
        return None

    def in_holdback(self, tenant: str, unit: str) -> bool:
        share = self.holdback_share
        return share > 0.0 and holdback_position(self.holdback_salt, tenant, unit) < share

    # --- refresh --------------------------------------------------------------------------------
    def apply(self, switches: list[KillSwitch]) -> None:
        """Install a freshly read list (also used by tests and the Admin call's own server)."""
        self.switches = tuple(switches)
        metrics.KILL_SWITCHES.set(len(self.switches))

    async def refresh(self) -> bool:
        """Read the kill switches once; False (list unchanged) when Redis cannot be read."""
        if self.redis is None or self.keys is None:
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                raw = await self.redis.hgetall(self.keys.kill_switch)
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("cannot read kill switches (keeping %d): %r", len(self.switches), exc)
            self._failing = True
            return False
        if self._failing:
            log.info("kill switches readable again")
        self._failing = False
        before = {s.field for s in self.switches}
        self.apply(parse_kill_switches(raw))
        after = {s.field for s in self.switches}
        if before != after:
            log.warning("kill switches now on: %s", sorted(after) or "none")
        self.read_ok += 1
        return True

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """First read, then the poll loop. Idempotent; no loop without Redis."""
        if self._task is not None or self.redis is None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="streamrec-kill-switches")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.refresh()

    async def stop(self) -> None:
        """Cancel and await the poll loop. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
