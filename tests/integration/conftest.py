"""Fixtures shared by the integration tests (the session's services are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.serving_support import RedisProcess


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test alone (to stop, pause or kill), not started yet."""
    process = RedisProcess(tmp_path)
    try:
        yield process
    finally:
        process.stop()
