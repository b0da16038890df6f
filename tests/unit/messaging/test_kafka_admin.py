"""``delete_topics`` returns only once the broker's metadata stops listing the topics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from core.errors import UnavailableError
from core.settings import Settings
from messaging import kafka_admin


class _LaggingAdmin:
    """Accepts the deletion at once but keeps listing the topics for ``lag`` more lists."""

    def __init__(self, names: list[str], lag: int) -> None:
        self.names = set(names)
        self.lag = lag
        self.deleted = False
        self.lists_after_delete = 0

    async def list_topics(self) -> list[str]:
        if self.deleted:
            self.lists_after_delete += 1
            if self.lists_after_delete > self.lag:
                return []
        return sorted(self.names)

    async def delete_topics(self, names: list[str]) -> Any:
        self.deleted = True
        return SimpleNamespace(topic_error_codes=[(name, 0) for name in names])


def _use(monkeypatch: pytest.MonkeyPatch, admin: _LaggingAdmin) -> None:
    @asynccontextmanager
    async def fake_client(settings: Settings) -> AsyncIterator[_LaggingAdmin]:
        yield admin

    monkeypatch.setattr(kafka_admin, "admin_client", fake_client)


async def test_waits_until_the_deleted_topics_are_no_longer_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(topic_prefix="t")
    names = [plan.name for plan in kafka_admin.topic_plan(settings)]
    admin = _LaggingAdmin(names, lag=3)
    _use(monkeypatch, admin)
    assert await kafka_admin.delete_topics(settings) == sorted(names)
    assert admin.lists_after_delete == 4  # three stale lists, then the empty one


async def test_topics_that_never_go_away_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(topic_prefix="t")
    names = [plan.name for plan in kafka_admin.topic_plan(settings)]
    _use(monkeypatch, _LaggingAdmin(names, lag=10**9))
    with pytest.raises(UnavailableError, match="still listed"):
        await kafka_admin.delete_topics(settings, gone_timeout_s=0.3)
