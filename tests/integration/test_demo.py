"""`streamrec demo` end to end against the session's Kafka + Redis, as a subprocess."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import Services
from tests.integration.serving_support import free_port
from tests.support import RunCli


def _environ(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZXx"


def _figure(text: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([0-9.]+)", text, re.MULTILINE)
    assert match, f"{label!r} missing from:\n{text}"
    return float(match.group(1))


def test_demo_runs_summarises_and_leaves_nothing_running(
    services: Services, run_cli: RunCli
) -> None:
    result = run_cli(
        "demo", "--duration", "20", "--rate", "100", "--no-live",
        env={
            "STREAMREC_GRPC_ADDR": f"127.0.0.1:{free_port()}",
            "STREAMREC_WORKER_METRICS_PORT": "0",
            "STREAMREC_SERVER_METRICS_PORT": "0",
        },
        timeout=280,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "demo summary:" in out
    assert _figure(out, "outcomes produced") > 500
    assert _figure(out, "recommend requests") > 300
    assert _figure(out, "events processed") > 1000
    assert _figure(out, "latency p99") > 0
    assert _figure(out, "freshness p99") >= 0
    assert re.search(r"^\s+alerts\s+\d+", out, re.MULTILINE), out
    streamrec, popularity = _figure(out, "HR@10 streamrec"), _figure(out, "HR@10 popularity")
    assert streamrec > popularity, out
    # the demo's own prefix, and the pids it started: both gone
    prefix = re.search(r"prefix (demo-[\w.-]+)", out)
    assert prefix, out
    pids = [int(p) for p in re.findall(r"started (?:worker|server) pid (\d+)", out)]
    assert len(pids) == 2, out
    assert all(f"stopped {name} pid" in out for name in ("worker", "server"))
    assert not [pid for pid in pids if _alive(pid)]
    assert "deleted 5 topics" in out
    # the test stack was running before (session lease): the demo leaves it running
    assert "stack: left running" in out
    # no live process carries the run's prefix in its environment (the demo's children do)
    marker = f"STREAMREC_TOPIC_PREFIX={prefix.group(1)}".encode()
    leftovers = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and marker in _environ(int(entry.name)) and _alive(int(entry.name))
    ]
    assert not leftovers, leftovers
