"""``streamrec status`` against a hung Redis: one error line that says why, exit 2."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support import hung_listener, run_cli, stderr_lines


@pytest.fixture
def hung_redis_url() -> Iterator[str]:
    with hung_listener() as port:
        yield f"redis://127.0.0.1:{port}/0"


def test_status_on_a_hung_redis_names_the_reason(hung_redis_url: str) -> None:
    # a status that waited on the hung Redis would never end: run_cli's timeout fails it
    # (subprocess.TimeoutExpired); how long the 0.5 s timeout takes on a loaded machine is
    # not this test's business
    result = run_cli(
        "status",
        "--sample",
        "0",
        env={
            "STREAMREC_REDIS_URL": hung_redis_url,
            "STREAMREC_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "STREAMREC_NETWORK_TIMEOUT_S": "0.5",
        },
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    # asyncio's timeout (no message: the reason names the wait) or redis-py's socket timeout
    assert re.fullmatch(
        r"streamrec: error: Redis did not answer"
        r"( within 0\.5 s \(TimeoutError\)|: \S.*[Tt]imeout.*)",
        lines[0],
    ), lines[0]
