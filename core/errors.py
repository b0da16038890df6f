"""One error hierarchy for streamrec. ``retriable`` tells callers whether to retry."""

from __future__ import annotations


class StreamrecError(Exception):
    """Base of every error streamrec raises on purpose."""

    retriable: bool = False


class ConfigError(StreamrecError):
    """Settings or arguments that cannot work; the message is one line for the user."""


class SettingsError(ConfigError):
    """A ``STREAMREC_*`` setting has a value streamrec cannot use; the message is one line
    naming the variable (raised by :func:`core.settings.load_settings`)."""


class UnavailableError(StreamrecError):
    """A dependency (Kafka, Redis) did not answer in time."""

    retriable = True


class StackError(StreamrecError):
    """The local stack could not be installed, started or stopped."""
