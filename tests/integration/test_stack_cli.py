"""`streamrec stack up/status/down` on a throwaway home and ports, with the shared jar cache."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from streamrec import procs
from tests.conftest import Services
from tests.support import RunCli

KAFKA_PORT, REDIS_PORT = 39092, 36379


def _pids(home: Path) -> dict[str, procs.ProcessRecord]:
    found = {}
    for name, path in (
        ("kafka", home / "kafka" / str(KAFKA_PORT) / "kafka.pid"),
        ("redis", home / "redis" / str(REDIS_PORT) / "redis.pid"),
    ):
        record = procs.ProcessRecord.load(path)
        if record is not None:
            found[name] = record
    return found


def test_up_twice_status_down_and_offline_restart(
    tmp_path: Path, services: Services, run_cli: RunCli
) -> None:
    home = tmp_path / "home"
    env = {
        "STREAMREC_HOME": str(home),
        "STREAMREC_KAFKA_LIBS_DIR": str(services.kafka_libs_dir),
        "STREAMREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{KAFKA_PORT}",
        "STREAMREC_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    }
    # A stale pid file naming a live process that is not ours (this test): must be ignored.
    stale = home / "redis" / str(REDIS_PORT) / "redis.pid"
    stale.parent.mkdir(parents=True)
    stale.write_text(
        json.dumps({"pid": os.getpid(), "start_ticks": 1, "exe": "/x", "argv": ["redis-server"]})
    )
    try:
        started = time.monotonic()
        first = run_cli("stack", "up", env=env)
        first_s = time.monotonic() - started
        assert first.returncode == 0, first.stderr
        assert "fetching" not in first.stdout  # jars came from the shared cache
        assert "formatting storage" in first.stdout
        records = _pids(home)
        assert set(records) == {"kafka", "redis"}
        assert records["redis"].pid != os.getpid()
        assert all(procs.is_ours(record) for record in records.values())

        again = run_cli("stack", "up", env=env)
        assert again.returncode == 0, again.stderr
        assert "starting" not in again.stdout
        for record in records.values():
            assert f"pid {record.pid}" in again.stdout
        assert _pids(home) == records

        status = run_cli("stack", "status", env=env)
        assert status.returncode == 0, status.stdout
        assert len(re.findall(r"running\s+pid", status.stdout)) == 2

        down = run_cli("stack", "down", env=env)
        assert down.returncode == 0, down.stderr
        for record in records.values():
            assert procs.wait_gone(record, 10.0)
            assert procs.start_ticks(record.pid) != record.start_ticks
        assert _pids(home) == {}
        assert run_cli("stack", "status", env=env).returncode == 1
        assert run_cli("stack", "down", env=env).returncode == 0  # idempotent

        started = time.monotonic()
        second = run_cli("stack", "up", env=env)
        second_s = time.monotonic() - started
        assert second.returncode == 0, second.stderr
        assert "fetching" not in second.stdout
        assert "formatting" not in second.stdout  # storage formatted once
        restarted = _pids(home)
        assert set(restarted) == {"kafka", "redis"}
        print(f"stack up: first {first_s:.1f}s, after down {second_s:.1f}s")
        assert second_s < 30.0
    finally:
        run_cli("stack", "down", env=env)
    for record in restarted.values():
        assert procs.wait_gone(record, 10.0)
    assert _pids(home) == {}
