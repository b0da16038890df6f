"""The virtualenv holds exactly the locked dependency set (uv.lock), nothing more or less.

``uv export`` lists the lock's packages with their environment markers; the markers are
evaluated for this interpreter and the result must equal ``pip freeze`` of the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.support import REPO


def _uv() -> str:
    """The uv that scripts/bootstrap installed (scripts/test exports its path)."""
    configured = os.environ.get("STREAMREC_UV")
    if configured:
        return configured
    version = next(
        line.split("==")[1].split()[0]
        for line in (REPO / "scripts" / "uv-requirements.txt").read_text().splitlines()
        if line.startswith("uv==")
    )
    home = Path(os.environ.get("STREAMREC_HOME", Path.home() / ".cache" / "streamrec"))
    return str(home / f"uv-{version}" / "bin" / "uv")


def _locked_for_this_interpreter() -> dict[str, str]:
    exported = subprocess.run(
        [
            _uv(),
            "export",
            "--frozen",
            "--extra",
            "dev",
            "--no-hashes",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pins: dict[str, str] = {}
    for line in exported.splitlines():
        requirement, _, marker = line.partition(";")
        if not requirement.strip() or requirement.startswith("#"):
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, _, version = requirement.strip().partition("==")
        pins[canonicalize_name(name)] = version
    return pins


def _installed() -> dict[str, str]:
    frozen = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--all",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    pins: dict[str, str] = {}
    for line in frozen.splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_pip_freeze_of_the_venv_equals_the_lock() -> None:
    locked, installed = _locked_for_this_interpreter(), _installed()
    assert len(locked) > 50, "uv export listed too few packages to be the whole lock"
    missing = {n: v for n, v in locked.items() if installed.get(n) != v}
    extra = {n: v for n, v in installed.items() if n not in locked}
    assert not missing and not extra, (
        f"venv differs from uv.lock: not as locked {missing}, not in the lock {extra}; "
        "run scripts/bootstrap"
    )


def test_faust_is_pinned_to_the_version_whose_consumer_loop_is_copied() -> None:
    assert _locked_for_this_interpreter()["faust-streaming"] == "0.15.3"
