"""--loglevel: validated once for the long-running commands."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from streamrec.commands.logging_option import configure_logging


@pytest.mark.parametrize(("given", "level"), [("debug", "DEBUG"), ("Warning", "WARNING")])
def test_known_levels_are_accepted_in_any_case(given: str, level: str) -> None:
    assert configure_logging(given) == level


def test_an_unknown_level_is_a_config_error_naming_the_option() -> None:
    with pytest.raises(ConfigError, match="--loglevel must be debug, info, warning or error"):
        configure_logging("verbose")
