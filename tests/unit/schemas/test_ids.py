"""The id contract (schemas.ids): valid ids, pii detection and the pseudonym policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SettingsError
from core.settings import load_settings
from schemas.ids import PiiPolicy, PiiRefused, Pseudonyms, id_problem, pii_kind

KEY = b"0123456789abcdef-test"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        (" ", "only whitespace"),
        ("\t\n ", "only whitespace"),
        ("u\t1", "U+0009"),  # a tab is a control character
        ("\u3000", "only whitespace"),
        ("u\x00", "U+0000"),
        ("u\x1b[31m", "U+001B"),
        ("u\x85", "U+0085"),
        ("x" * 129, "longer than 128"),
    ],
)
def test_bad_ids_are_named(value: str, problem: str) -> None:
    found = id_problem(value, "user_id")
    assert found is not None and problem in found and found.startswith("user_id ")


@pytest.mark.parametrize("value", ["u1", " u1", "ümlaut", "a|b", "a:b", "x" * 128, "🙂"])
def test_good_ids_pass(value: str) -> None:
    assert id_problem(value) is None


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("jane.doe@example.com", "e-mail address"),
        ("a+b@mail.co.uk", "e-mail address"),
        ("+44 20 7946 0958", "phone number"),
        ("+15551234567", "phone number"),
        ("555-123-4567", "phone number"),
        ("(555) 123 4567", "phone number"),
        ("06.12.34.56.78", "phone number"),
    ],
)
def test_pii_is_recognised(value: str, kind: str) -> None:
    assert pii_kind(value) == kind


@pytest.mark.parametrize(
    "value",
    ["1150086", "11299809", "943", "u1@", "@home", "user@localhost", "a-b-c", "12-34", "v2.0.1"],
)
def test_pseudonymous_ids_are_not_pii(value: str) -> None:
    """Bare digits are numeric ids (MovieLens, rsc15, retailrocket), never phone numbers."""
    assert pii_kind(value) is None


@given(st.integers(min_value=0, max_value=10**15))
def test_no_numeric_id_is_a_phone_number(n: int) -> None:
    assert pii_kind(str(n)) is None


def test_reject_names_the_field_not_the_value() -> None:
    with pytest.raises(PiiRefused) as caught:
        Pseudonyms(PiiPolicy.REJECT).apply("jane@example.com", "session_id")
    assert "session_id looks like an e-mail address" in str(caught.value)
    assert "jane" not in str(caught.value)
    assert Pseudonyms(PiiPolicy.REJECT).apply("u1") == "u1"


def test_hash_is_keyed_stable_and_a_valid_id() -> None:
    one = Pseudonyms(PiiPolicy.HASH, KEY)
    other = Pseudonyms(PiiPolicy.HASH, KEY + b"x")
    hashed = one.apply("+44 20 7946 0958")
    assert hashed == one.apply("+44 20 7946 0958") != other.apply("+44 20 7946 0958")
    assert hashed.startswith("pii-") and len(hashed) == 36
    assert id_problem(hashed) is None and pii_kind(hashed) is None
    assert one.apply("u1") == "u1"  # only what looks like pii is replaced


def test_off_leaves_everything() -> None:
    assert Pseudonyms(PiiPolicy.OFF).apply("jane@example.com") == "jane@example.com"


def test_hash_needs_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        Pseudonyms(PiiPolicy.HASH, b"short")
    with pytest.raises(SettingsError, match="STREAMREC_PII_HASH_KEY"):
        load_settings(pii_policy="hash")
    with pytest.raises(SettingsError, match="STREAMREC_PII_POLICY"):
        load_settings(pii_policy="maybe")
    cfg = load_settings(pii_policy="hash", pii_hash_key="0123456789abcdef")
    assert Pseudonyms.from_settings(cfg).policy is PiiPolicy.HASH
    assert Pseudonyms.from_settings(load_settings()).policy is PiiPolicy.REJECT
