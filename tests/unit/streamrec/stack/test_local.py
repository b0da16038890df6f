"""Local stack internals: which services are managed, configs, pid records, probes."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import StackError
from core.settings import load_settings
from streamrec.stack import procs
from streamrec.stack.deps import POM
from streamrec.stack.local import (
    LocalStack,
    ServiceState,
    _server_properties,
    kafka_endpoint,
    kafka_libs_dir,
    redis_endpoint,
)
from tests.support import REPO


@pytest.mark.parametrize(
    ("bootstrap", "managed"),
    [
        ("127.0.0.1:19092", True),
        ("localhost:29092", True),
        ("[::1]:29092", True),
        ("kafka:9092", False),
        ("10.1.2.3:9092", False),
        ("127.0.0.1:9092,127.0.0.1:9093", False),
    ],
)
def test_kafka_is_managed_only_on_a_single_loopback_address(bootstrap: str, managed: bool) -> None:
    endpoint = kafka_endpoint(load_settings(kafka_bootstrap=bootstrap))
    assert endpoint.managed is managed


@pytest.mark.parametrize(
    ("url", "managed", "port"),
    [
        ("redis://127.0.0.1:16379/0", True, 16379),
        ("redis://localhost/0", True, 6379),
        ("rediss://127.0.0.1:6380/0", False, 6380),
        ("redis://redis:6379/0", False, 6379),
    ],
)
def test_redis_is_managed_only_on_loopback_without_tls(url: str, managed: bool, port: int) -> None:
    endpoint = redis_endpoint(load_settings(redis_url=url))
    assert (endpoint.managed, endpoint.port) == (managed, port)


def test_redis_password_is_hidden_in_the_address() -> None:
    endpoint = redis_endpoint(load_settings(redis_url="redis://:s3cret@127.0.0.1:16379/0"))
    assert "s3cret" not in endpoint.address
    assert endpoint.address == "redis://:***@127.0.0.1:16379/0"


def test_server_properties_single_node_kraft(tmp_path: Path) -> None:
    endpoint = kafka_endpoint(load_settings(kafka_bootstrap="127.0.0.1:29092"))
    props = dict(
        line.split("=", 1)
        for line in _server_properties(endpoint, tmp_path).splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path)
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_jars_dir_defaults_under_home_and_can_be_shared(tmp_path: Path) -> None:
    assert kafka_libs_dir(load_settings(home=tmp_path)) == tmp_path / "kafka" / "libs"
    shared = tmp_path / "shared"
    assert kafka_libs_dir(load_settings(home=tmp_path, kafka_libs_dir=shared)) == shared


def test_stack_instances_are_per_port(tmp_path: Path) -> None:
    one = LocalStack(load_settings(home=tmp_path, kafka_bootstrap="127.0.0.1:29092"))
    two = LocalStack(load_settings(home=tmp_path, kafka_bootstrap="127.0.0.1:39092"))
    assert one._pid["kafka"] != two._pid["kafka"]
    assert one._log["kafka"] != two._log["kafka"]


def test_external_services_are_not_started(tmp_path: Path) -> None:
    stack = LocalStack(
        load_settings(home=tmp_path, kafka_bootstrap="192.0.2.1:9092"), timeout_s=1.0
    )
    assert not stack.stop_kafka()
    with pytest.raises(StackError, match="external"):
        stack._wait_ready("kafka", time.monotonic() + 1.0, launched=False)


def test_service_line() -> None:
    running = ServiceState("kafka", "127.0.0.1:19092", True, True, 42, None)
    assert "running" in running.line() and "pid 42" in running.line()
    foreign = ServiceState("redis", "redis://h:1/0", False, True, None, None)
    assert "external" in foreign.line()
    stopped = ServiceState("redis", "redis://127.0.0.1:1/0", True, False, None, None)
    assert stopped.line().endswith("stopped")


# --- process records -------------------------------------------------------------------------


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[procs.ProcessRecord]:
    record = procs.launch(
        [sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "s.log", cwd=tmp_path
    )
    yield record
    procs.terminate(record, 5.0, graceful=False)


def test_launch_record_roundtrip_and_terminate(
    tmp_path: Path, sleeper: procs.ProcessRecord
) -> None:
    path = tmp_path / "run" / "x.pid"
    sleeper.save(path)
    loaded = procs.ProcessRecord.load(path)
    assert loaded == sleeper
    assert procs.is_ours(sleeper)
    assert procs.terminate(sleeper, 5.0)
    assert not procs.is_ours(sleeper)
    assert procs.start_ticks(sleeper.pid) is None


def test_a_recycled_pid_is_never_signalled() -> None:
    me = os.getpid()
    ticks = procs.start_ticks(me)
    assert ticks is not None
    impostor = procs.ProcessRecord(me, ticks + 1, sys.executable, ("python",))
    assert not procs.is_ours(impostor)
    assert procs.terminate(impostor, 0.1, graceful=False)  # "gone" as far as we are concerned
    other_exe = procs.ProcessRecord(me, ticks, "/usr/bin/not-python", ("python",))
    assert not procs.is_ours(other_exe)
    assert procs.start_ticks(me) == ticks  # we are still alive


def test_corrupt_pid_file_is_treated_as_stale(tmp_path: Path) -> None:
    path = tmp_path / "bad.pid"
    path.write_text("{not json")
    assert procs.ProcessRecord.load(path) is None
    assert procs.ProcessRecord.load(tmp_path / "absent.pid") is None


def test_log_hint_prefers_error_lines(tmp_path: Path) -> None:
    log = tmp_path / "k.log"
    log.write_text("old ERROR from before\n")
    offset = procs.log_offset(log)
    with log.open("a") as handle:
        handle.write("=== streamrec stack ===\nINFO starting\nERROR Address already in use\nbye\n")
    assert procs.log_hint(log, offset) == "ERROR Address already in use"


# --- probes ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probes_are_false_on_a_closed_port() -> None:
    port = _free_port()
    assert not procs.kafka_answers("127.0.0.1", port, timeout_s=0.5)
    assert not procs.redis_answers(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    assert not procs.port_in_use("127.0.0.1", port)


def test_kafka_probe_is_false_for_a_server_that_is_not_kafka() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = int(server.getsockname()[1])

    def answer_nonsense() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer_nonsense, daemon=True)
    thread.start()
    try:
        assert not procs.kafka_answers("127.0.0.1", port, timeout_s=1.0)
    finally:
        thread.join(5.0)
        server.close()
    assert not thread.is_alive()


def test_kafka_probe_gives_up_on_a_silent_server_within_its_timeout(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as server:  # accepts (backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        started = time.monotonic()
        assert not procs.kafka_answers("127.0.0.1", int(server.getsockname()[1]), timeout_s=0.5)
        # a bound for a hang, not a speed (aiokafka's own request timeout would be 40 s)
        assert time.monotonic() - started < 30.0
    assert not procs.kafka_answers("127.0.0.1", _free_port(), timeout_s=0.5)
    assert capfd.readouterr().err == ""  # aiokafka's "Unable connect to …" is not printed


async def test_kafka_probe_works_inside_a_running_event_loop() -> None:
    assert not procs.kafka_answers("127.0.0.1", _free_port(), timeout_s=0.5)


def test_only_the_last_lease_holder_stops_what_leases_started(tmp_path: Path) -> None:
    stack = LocalStack(load_settings(home=tmp_path, kafka_bootstrap="127.0.0.1:29092"))
    users, _, auto = stack._lease_paths()
    users.parent.mkdir(parents=True)
    auto.write_text("kafka\nredis\n")
    with users.open("a") as other_user:
        fcntl.flock(other_user, fcntl.LOCK_SH)  # a concurrent test session
        assert not stack.stop_if_unused()
        assert auto.exists()
    assert stack.stop_if_unused()  # nothing of ours runs here, so nothing is signalled
    assert not auto.exists()
    assert not stack.stop_if_unused()  # nothing was started by a lease any more


def test_claim_makes_a_lease_started_stack_hand_owned(tmp_path: Path) -> None:
    stack = LocalStack(load_settings(home=tmp_path))
    auto = stack._lease_paths()[2]
    auto.parent.mkdir(parents=True)
    auto.write_text("kafka\n")
    stack.claim()
    assert not auto.exists()
    assert not stack.stop_if_unused()


def test_the_kafka_pom_is_found_in_the_repository() -> None:
    # a fresh clone has no cached jars: `stack fetch` needs the pom (it moved once with the code)
    assert POM.is_file(), POM
    assert POM.relative_to(REPO) == Path("deploy/kafka/pom.xml")
