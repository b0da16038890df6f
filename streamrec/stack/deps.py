"""Prerequisites of the local stack: the Kafka broker jars, java and redis-server.

The jars come from Maven Central once (``deploy/kafka/pom.xml``) into a cache directory;
later starts are offline. redis-server is installed with apt-get when missing and running
as root; otherwise the error says what to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from core.errors import StackError
from core.settings import Settings

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"  # the repository root
_REDIS_PATHS = (Path("/usr/bin"), Path("/usr/sbin"), Path("/usr/local/bin"))

Echo = Callable[[str], None]


def _silent(_: str) -> None:
    return None


def kafka_libs_dir(settings: Settings) -> Path:
    return settings.kafka_libs_dir or settings.home / "kafka" / "libs"


def _pom_digest() -> str | None:
    try:
        return hashlib.sha256(POM.read_bytes()).hexdigest()
    except OSError:
        return None


def kafka_jars_cached(settings: Settings) -> bool:
    stamp = kafka_libs_dir(settings) / ".complete"
    if not stamp.is_file():
        return False
    want = _pom_digest()
    return want is None or stamp.read_text().strip() == want


def find_java() -> Path:
    found = shutil.which("java")
    if found is None:
        raise StackError(
            "java not found: install a Java 17+ runtime "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
    return Path(found)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_kafka_jars(settings: Settings, echo: Echo = _silent) -> Path:
    """The directory holding the broker jars; fetched with Maven the first time only."""
    libs = kafka_libs_dir(settings)
    if kafka_jars_cached(settings):
        return libs
    want = _pom_digest()
    if want is None:
        raise StackError(f"Kafka jars are not cached in {libs} and {POM} is missing")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            f"Maven (mvn) is needed once to fetch the Kafka broker jars into {libs}: "
            "install it (Debian: apt-get install maven)"
        )
    find_java()
    with file_lock(libs.parent / ".fetch.lock"):
        if kafka_jars_cached(settings):  # another process fetched them while we waited
            return libs
        echo(f"kafka: fetching broker jars from Maven Central into {libs} (once)")
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=libs.parent))
        tmp.chmod(0o755)
        try:
            result = subprocess.run(
                [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                 f"-DoutputDirectory={tmp}"],
                capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            if result.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
                output = (result.stdout + result.stderr).strip().splitlines()
                detail = next((ln for ln in output if "ERROR" in ln), output[-1] if output else "")
                raise StackError(f"fetching Kafka jars with mvn failed: {detail.strip()[:300]}")
            (tmp / ".complete").write_text(want + "\n")
            if libs.exists():
                shutil.rmtree(libs)
            tmp.rename(libs)
        except subprocess.TimeoutExpired as exc:
            raise StackError("fetching Kafka jars with mvn took longer than 15 min") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return libs


def find_redis_server() -> Path | None:
    found = shutil.which("redis-server")
    if found is not None:
        return Path(found)
    for folder in _REDIS_PATHS:
        candidate = folder / "redis-server"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_redis_server(echo: Echo = _silent) -> Path:
    """Path of redis-server; installed with apt-get when missing and running as root."""
    found = find_redis_server()
    if found is not None:
        return found
    apt = shutil.which("apt-get")
    if os.geteuid() == 0 and apt is not None:
        echo("redis: installing redis-server with apt-get (once)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            [apt, "update", "-qq"],
            [apt, "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        ):
            try:
                result = subprocess.run(
                    argv, env=env, capture_output=True, text=True, timeout=900, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise StackError(f"{' '.join(argv[1:3])} took longer than 15 min") from exc
            if result.returncode != 0:
                lines = result.stderr.strip().splitlines() or ["(no output)"]
                raise StackError(f"apt-get {argv[1]} failed: {lines[-1][:300]}")
        found = find_redis_server()
        if found is not None:
            return found
    raise StackError(
        "redis-server not found: install redis-server (Debian: apt-get install redis-server)"
    )


def missing_prerequisites(settings: Settings) -> list[str]:
    """What prevents starting the local stack right now, without installing anything."""
    missing = []
    if shutil.which("java") is None:
        missing.append("java")
    if not kafka_jars_cached(settings) and shutil.which("mvn") is None:
        missing.append("mvn (to fetch the Kafka jars once)")
    can_apt = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if find_redis_server() is None and not can_apt:
        missing.append("redis-server")
    return missing
