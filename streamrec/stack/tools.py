"""Prometheus, Alertmanager and promtool from Debian's packages, unpacked into a cache.

``apt-get download`` fetches the ``.deb`` (no install, no service set up, no root needed when
the package lists are present; as root a missing list is refreshed with ``apt-get update``),
``dpkg-deb -x`` unpacks it into ``TOOLS/<package>/`` and a ``.complete`` stamp holding the
package version marks it done. Later calls are offline. ``TOOLS`` is ``Settings.tools_dir``
(default ``HOME/tools``), where ``scripts/test`` also finds ``promtool``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import StackError
from core.settings import Settings
from streamrec.stack.deps import Echo, file_lock

__all__ = [
    "ALERTMANAGER_PACKAGE",
    "ALERTMANAGER_TEMPLATES",
    "PROMETHEUS_PACKAGE",
    "DebianTool",
    "ensure_alertmanager",
    "ensure_package",
    "ensure_prometheus",
    "ensure_promtool",
    "missing_tools",
    "tools_dir",
]

APT_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class DebianTool:
    """A Debian package and the executables the stack needs from it (paths in the package)."""

    package: str
    binaries: tuple[str, ...]


PROMETHEUS_PACKAGE = DebianTool("prometheus", ("usr/bin/prometheus", "usr/bin/promtool"))
ALERTMANAGER_PACKAGE = DebianTool(
    "prometheus-alertmanager", ("usr/bin/prometheus-alertmanager", "usr/bin/amtool")
)
#: Debian builds Alertmanager to read its notification templates from this fixed directory
#: (no flag moves it), so unpacking alone is not enough: the templates must be there too.
ALERTMANAGER_TEMPLATES = Path("/usr/share/prometheus/alertmanager")
_TEMPLATE_FILES = ("default.tmpl", "email.tmpl")


def _silent(_: str) -> None:
    return None


def tools_dir(settings: Settings) -> Path:
    return settings.tools_dir or settings.home / "tools"


def unpacked(settings: Settings, tool: DebianTool) -> Path | None:
    """The unpacked package root when it is complete in the cache, else None."""
    root = tools_dir(settings) / tool.package
    if not (root / ".complete").is_file():
        return None
    if not all(os.access(root / binary, os.X_OK) for binary in tool.binaries):
        return None
    return root


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{' '.join(argv[:3])} took longer than {APT_TIMEOUT_S:g} s") from exc


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (result.stderr + result.stdout).strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or ["(no output)"])[-1][:300]


def _download(apt: str, package: str, work: Path) -> Path:
    result = _run([apt, "download", package], work)
    if result.returncode != 0 and os.geteuid() == 0:  # package lists missing or stale
        _run([apt, "update", "-qq"], work)
        result = _run([apt, "download", package], work)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise StackError(f"apt-get download {package} failed: {_last_line(result)}")
    return debs[-1]


def ensure_package(settings: Settings, tool: DebianTool, echo: Echo = _silent) -> Path:
    """The unpacked root of ``tool``'s Debian package; fetched and unpacked the first time."""
    found = unpacked(settings, tool)
    if found is not None:
        return found
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise StackError(
            f"{tool.package}: not in {tools_dir(settings)} and apt-get / dpkg-deb are missing "
            "to fetch Debian's package (a Debian or Ubuntu machine is needed once)"
        )
    base = tools_dir(settings)
    base.mkdir(parents=True, exist_ok=True)
    with file_lock(base / ".fetch.lock"):
        found = unpacked(settings, tool)
        if found is not None:  # another process fetched it while we waited
            return found
        echo(f"{tool.package}: fetching Debian's package into {base / tool.package} (once)")
        work = Path(tempfile.mkdtemp(prefix=f".{tool.package}-", dir=base))
        try:
            deb = _download(apt, tool.package, work)
            root = work / "root"
            result = _run([dpkg, "-x", str(deb), str(root)], work)
            if result.returncode != 0:
                raise StackError(f"dpkg-deb -x {deb.name} failed: {_last_line(result)}")
            version = _run([dpkg, "-f", str(deb), "Version"], work).stdout.strip()
            missing = [b for b in tool.binaries if not os.access(root / b, os.X_OK)]
            if missing:
                raise StackError(f"{deb.name} holds no {', '.join(missing)}")
            (root / ".complete").write_text(f"{version}\n")
            root.chmod(0o755)
            target = base / tool.package
            if target.exists():
                shutil.rmtree(target)
            root.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return base / tool.package


def ensure_prometheus(settings: Settings, echo: Echo = _silent) -> Path:
    """Root of the unpacked ``prometheus`` package (``usr/bin/prometheus``, web assets)."""
    return ensure_package(settings, PROMETHEUS_PACKAGE, echo)


def ensure_alertmanager(settings: Settings, echo: Echo = _silent) -> Path:
    """Root of the unpacked ``prometheus-alertmanager`` package, its templates in place.

    The package's two template files are copied to :data:`ALERTMANAGER_TEMPLATES` when
    missing (as root; otherwise the error says what to run). Nothing else is installed.
    """
    root = ensure_package(settings, ALERTMANAGER_PACKAGE, echo)
    if all((ALERTMANAGER_TEMPLATES / name).is_file() for name in _TEMPLATE_FILES):
        return root
    if os.geteuid() != 0:
        raise StackError(
            f"Debian's Alertmanager reads its templates from {ALERTMANAGER_TEMPLATES}, which "
            "is missing: run `streamrec stack fetch --with-monitoring` once as root (it copies "
            "them from the unpacked package) or install prometheus-alertmanager"
        )
    echo(f"prometheus-alertmanager: copying its templates to {ALERTMANAGER_TEMPLATES} (once)")
    ALERTMANAGER_TEMPLATES.mkdir(parents=True, exist_ok=True)
    source = root / "usr" / "share" / "prometheus" / "alertmanager"
    for name in _TEMPLATE_FILES:
        if not (ALERTMANAGER_TEMPLATES / name).is_file():
            shutil.copyfile(source / name, ALERTMANAGER_TEMPLATES / name)
    return root


def ensure_promtool(settings: Settings, echo: Echo = _silent) -> Path:
    """``TOOLS/promtool``: a link into the unpacked prometheus package (kept if present)."""
    link = tools_dir(settings) / "promtool"
    if os.access(link, os.X_OK):
        return link
    root = ensure_prometheus(settings, echo)
    link.unlink(missing_ok=True)  # a dangling link left by an older cache
    link.symlink_to(root / "usr" / "bin" / "promtool")
    return link


def missing_tools(settings: Settings) -> list[str]:
    """What prevents starting Prometheus and Alertmanager, without fetching anything."""
    can_fetch = shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None
    missing = [
        tool.package
        for tool in (PROMETHEUS_PACKAGE, ALERTMANAGER_PACKAGE)
        if unpacked(settings, tool) is None and not can_fetch
    ]
    templates = all((ALERTMANAGER_TEMPLATES / name).is_file() for name in _TEMPLATE_FILES)
    if not templates and os.geteuid() != 0:
        missing.append(f"Alertmanager templates in {ALERTMANAGER_TEMPLATES}")
    return missing
