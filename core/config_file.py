"""Where settings come from besides the environment: a TOML config file and named profiles.

Precedence, highest first: ``STREAMREC_*`` environment variables, the config file
(``STREAMREC_CONFIG_FILE``, e.g. written by ``streamrec eval tune``), the profile
(``STREAMREC_PROFILE``, or ``profile = "…"`` in the config file), the declared defaults.
A config file holds setting names as keys (``covis_window = 20``); an unknown key or an
unreadable file raises :class:`core.errors.SettingsError` with a one-line reason.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import SettingsError
from core.profiles import PROFILES

CONFIG_FILE_ENV = "STREAMREC_CONFIG_FILE"
PROFILE_ENV = "STREAMREC_PROFILE"
PROFILE_KEY = "profile"


def read_config_file(path: Path, known: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in the TOML file at ``path``; every key must be a setting name."""
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{CONFIG_FILE_ENV}: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_FILE_ENV}: {path} is not TOML: {exc}") from exc
    unknown = sorted(key for key in doc if key not in known and key != PROFILE_KEY)
    if unknown:
        raise SettingsError(
            f"{CONFIG_FILE_ENV}: {path}: unknown setting(s) {', '.join(unknown)} "
            "(`streamrec config` lists them)"
        )
    return doc


def profile_values(name: str) -> dict[str, Any]:
    """The overrides of the named profile (``STREAMREC_PROFILE``)."""
    try:
        return dict(PROFILES[name].values)
    except KeyError:
        raise SettingsError(
            f"{PROFILE_ENV}: unknown profile {name!r} (one of {', '.join(sorted(PROFILES))})"
        ) from None


def layered_values(
    known: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
    init: Mapping[str, Any] | None = None,
) -> Layers:
    """The config file's and the profile's values, read once per settings load.

    The file and the profile are named by ``init`` (keyword arguments of ``Settings``) first,
    then by the environment.
    """
    init = init or {}
    path = str(init.get("config_file") or environ.get(CONFIG_FILE_ENV, ""))
    from_file = read_config_file(Path(path), known) if path else {}
    named = init.get("profile") or environ.get(PROFILE_ENV)
    profile = named or from_file.get(PROFILE_KEY) or ""
    from_file.pop(PROFILE_KEY, None)
    if not isinstance(profile, str):
        raise SettingsError(f"{CONFIG_FILE_ENV}: {PROFILE_KEY} must be a string")
    return Layers(
        config_file=path or None,
        profile=profile or None,
        profile_named_in_file=bool(profile) and not named,
        from_file=from_file,
        from_profile=profile_values(profile) if profile else {},
    )


class Layers:
    """The non-environment layers of one settings load (for ``streamrec config``'s sources)."""

    __slots__ = ("config_file", "from_file", "from_profile", "profile", "profile_named_in_file")

    def __init__(
        self,
        *,
        config_file: str | None,
        profile: str | None,
        profile_named_in_file: bool,
        from_file: dict[str, Any],
        from_profile: dict[str, Any],
    ) -> None:
        self.config_file = config_file
        self.profile = profile
        self.profile_named_in_file = profile_named_in_file
        self.from_file = from_file
        self.from_profile = from_profile

    def merged(self) -> dict[str, Any]:
        """Profile values overridden by the file's (the profile's name included)."""
        named = {"profile": self.profile} if self.profile else {}
        return {**self.from_profile, **self.from_file, **named}

    def source_of(self, name: str, environ: Mapping[str, str] = os.environ) -> str:
        """Where setting ``name`` came from: env, file, profile NAME or default."""
        if f"STREAMREC_{name.upper()}" in environ:
            return "env"
        if name in self.from_file or (name == PROFILE_KEY and self.profile_named_in_file):
            return "file"
        if name in self.from_profile:
            return f"profile {self.profile}"
        return "default"
