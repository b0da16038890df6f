"""The id contract: which strings are ids, and the pseudonymous-id policy (issue 19).

:func:`id_problem` is the one rule for every id (user, session, item, request, category):
non-empty, not only whitespace, no control character (Unicode ``Cc``), at most 128
characters. Events that break it go to the dead-letter topic; requests get INVALID_ARGUMENT.

:class:`Pseudonyms` applies ``pii_policy`` to user and session ids, the same function in the
worker (events) and the server (requests): an id that looks like an e-mail address or a phone
number is refused (``reject``), replaced by a keyed HMAC-SHA256 (``hash``: ``pii-`` + 32 hex
digits, the same in every process holding the key, so a user's events and requests still
meet) or left alone (``off``). Bare digit strings are numeric ids, never phone numbers:
a phone number is recognised by a leading ``+`` or by its separators (``555-123-4567``,
``(555) 123 4567``) around 7 to 15 digits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "MAX_ID_LEN",
    "PiiPolicy",
    "PiiRefused",
    "Pseudonyms",
    "id_problem",
    "pii_kind",
]

MAX_ID_LEN = 128
HASHED_PREFIX = "pii-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # exactly Unicode category Cc
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}", re.ASCII)
# digits with optional + and ( ) . - space separators; the digit count is checked apart
_PHONE_SHAPE = re.compile(r"\+?[\d()][\d\s().-]*\d")
_SEPARATORS = re.compile(r"[\s().-]")


def id_problem(value: str, what: str = "id") -> str | None:
    """Why ``value`` is not a valid id (one line naming ``what``), or None when it is."""
    if not value:
        return f"{what} is empty"
    if len(value) > MAX_ID_LEN:
        return f"{what} is longer than {MAX_ID_LEN} characters"
    if not value.strip():
        return f"{what} is only whitespace"
    match = _CONTROL.search(value)
    if match is not None:
        return f"{what} contains the control character U+{ord(match.group()):04X}"
    return None


def pii_kind(value: str) -> str | None:
    """``e-mail address`` / ``phone number`` when ``value`` looks like one, else None."""
    if "@" in value and _EMAIL.fullmatch(value):
        return "e-mail address"
    if _PHONE_SHAPE.fullmatch(value):
        digits = sum(c.isdigit() for c in value)
        if 7 <= digits <= 15 and (value.startswith("+") or _SEPARATORS.search(value)):
            return "phone number"
    return None


class PiiPolicy(StrEnum):
    """What to do with an id that looks like personal data (setting ``pii_policy``)."""

    REJECT = "reject"
    HASH = "hash"
    OFF = "off"


class PiiRefused(ValueError):
    """An id refused by the ``reject`` policy; the message names the field, never the value."""


@dataclass(frozen=True, slots=True)
class Pseudonyms:
    """The ``pii_policy`` applied to one id at a time (see the module docstring)."""

    policy: PiiPolicy = PiiPolicy.REJECT
    key: bytes = b""

    def __post_init__(self) -> None:
        if self.policy is PiiPolicy.HASH and len(self.key) < 16:
            raise ValueError("the hash policy needs a key of at least 16 bytes")

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonyms:
        key = settings.pii_hash_key.get_secret_value() if settings.pii_hash_key else ""
        return cls(PiiPolicy(settings.pii_policy), key.encode())

    def hashed(self, value: str) -> str:
        """The pseudonym of ``value`` under this key (``pii-`` + 128 bits of HMAC-SHA256)."""
        digest = hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()
        return HASHED_PREFIX + digest[:32]

    def apply(self, value: str, what: str = "user_id") -> str:
        """``value`` itself, or its pseudonym; raise :class:`PiiRefused` under ``reject``."""
        if self.policy is PiiPolicy.OFF:
            return value
        kind = pii_kind(value)
        if kind is None:
            return value
        if self.policy is PiiPolicy.REJECT:
            article = "an" if kind[0] in "aeiou" else "a"
            raise PiiRefused(f"{what} looks like {article} {kind}: use a pseudonymous id")
        return self.hashed(value)

    def apply_optional(self, value: str | None, what: str) -> str | None:
        return None if value is None else self.apply(value, what)
