"""`streamrec stack up/status/down` on a throwaway home and free ports, sharing the jar cache."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from core.settings import load_settings
from streamrec.stack import procs
from streamrec.stack.local import LocalStack
from tests.conftest import Services
from tests.support import STREAMREC, RunCli, free_ports

#: How long a stopped service may take to be gone: generous (shared, loaded test machines).
GONE_S = 60.0


def _stack_for(env: dict[str, str]) -> LocalStack:
    """The in-process view of the stack the CLI manages under ``env``."""
    return LocalStack(
        load_settings(
            home=Path(env["STREAMREC_HOME"]),
            kafka_libs_dir=Path(env["STREAMREC_KAFKA_LIBS_DIR"]),
            kafka_bootstrap=env["STREAMREC_KAFKA_BOOTSTRAP"],
            redis_url=env["STREAMREC_REDIS_URL"],
        ),
        timeout_s=120.0,
    )


def _pids(home: Path, kafka_port: int, redis_port: int) -> dict[str, procs.ProcessRecord]:
    found = {}
    for name, path in (
        ("kafka", home / "kafka" / str(kafka_port) / "kafka.pid"),
        ("redis", home / "redis" / str(redis_port) / "redis.pid"),
    ):
        record = procs.ProcessRecord.load(path)
        if record is not None:
            found[name] = record
    return found


def test_up_twice_status_down_and_offline_restart(
    tmp_path: Path,
    services: Services,
    run_cli: RunCli,
    record_property: Callable[[str, object], None],
) -> None:
    home = tmp_path / "home"
    kafka_port, redis_port = free_ports()
    env = {
        "STREAMREC_HOME": str(home),
        "STREAMREC_KAFKA_LIBS_DIR": str(services.kafka_libs_dir),
        "STREAMREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "STREAMREC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    # A stale pid file naming a live process that is not ours (this test): must be ignored.
    stale = home / "redis" / str(redis_port) / "redis.pid"
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
        records = _pids(home, kafka_port, redis_port)
        assert set(records) == {"kafka", "redis"}
        assert records["redis"].pid != os.getpid()
        assert all(procs.is_ours(record) for record in records.values())

        again = run_cli("stack", "up", env=env)
        assert again.returncode == 0, again.stderr
        assert "starting" not in again.stdout
        for record in records.values():
            assert f"pid {record.pid}" in again.stdout
        assert _pids(home, kafka_port, redis_port) == records

        status = run_cli("stack", "status", env=env)
        assert status.returncode == 0, status.stdout
        assert len(re.findall(r"running\s+pid", status.stdout)) == 2

        down = run_cli("stack", "down", env=env)
        assert down.returncode == 0, down.stderr
        for record in records.values():
            assert procs.wait_gone(record, GONE_S)
            assert procs.start_ticks(record.pid) != record.start_ticks
        assert _pids(home, kafka_port, redis_port) == {}
        assert run_cli("stack", "status", env=env).returncode == 1
        assert run_cli("stack", "down", env=env).returncode == 0  # idempotent

        started = time.monotonic()
        second = run_cli("stack", "up", env=env)
        second_s = time.monotonic() - started
        assert second.returncode == 0, second.stderr
        assert "fetching" not in second.stdout
        assert "formatting" not in second.stdout  # storage formatted once
        restarted = _pids(home, kafka_port, redis_port)
        assert set(restarted) == {"kafka", "redis"}
        # how long each start took is reported, not bounded (the machine is shared)
        record_property("stack_up_first_s", round(first_s, 1))
        record_property("stack_up_again_s", round(second_s, 1))
        print(f"stack up: first {first_s:.1f}s, after down {second_s:.1f}s")
    finally:
        _stack_for(env).stop()  # not via the CLI: cleanup must not depend on what is tested
    for record in restarted.values():
        assert procs.wait_gone(record, GONE_S)
    assert _pids(home, kafka_port, redis_port) == {}


def test_exec_shares_the_stack_and_only_the_last_user_stops_it(
    tmp_path: Path, services: Services, run_cli: RunCli
) -> None:
    home = tmp_path / "home"
    kafka_port, redis_port = free_ports()
    env = {
        "STREAMREC_HOME": str(home),
        "STREAMREC_KAFKA_LIBS_DIR": str(services.kafka_libs_dir),
        "STREAMREC_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "STREAMREC_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    stack = _stack_for(env)
    try:
        # Two users at once: the inner `exec` finds the stack up and leaves it to us.
        with stack.lease() as states:
            assert all(state.running and state.pid for state in states)
            records = _pids(home, kafka_port, redis_port)
            inner = run_cli("stack", "exec", "--", "sh", "-c", "exit 7", env=env)
            assert inner.returncode == 7, inner.stderr
            assert "starting" not in inner.stdout
            assert all(procs.is_ours(record) for record in records.values())
        for record in records.values():  # we were the last user: stopped
            assert procs.wait_gone(record, GONE_S)

        # Alone: exec starts the stack, runs the command against it, stops it.
        alone = run_cli("stack", "exec", "--", str(STREAMREC), "stack", "status", env=env)
        assert alone.returncode == 0, alone.stdout + alone.stderr
        assert alone.stdout.count("starting on") == 2
        assert _pids(home, kafka_port, redis_port) == {}
        assert not any(state.running for state in stack.status())

        # A stack started by hand is used by exec but never stopped by it.
        assert run_cli("stack", "up", env=env).returncode == 0
        by_hand = _pids(home, kafka_port, redis_port)
        assert run_cli("stack", "exec", "--", "true", env=env).returncode == 0
        assert run_cli("stack", "down", "--if-unused", env=env).returncode == 0
        assert all(procs.is_ours(record) for record in by_hand.values())
    finally:
        stack.stop()
    assert _pids(home, kafka_port, redis_port) == {}
