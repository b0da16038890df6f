"""serving.auth: tokens, bearer parsing, role order, the start-up token check, authentication."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from pydantic import SecretStr

from core.errors import ConfigError
from core.settings import Settings
from schemas.admin import BOOTSTRAP_PRINCIPAL, PrincipalRecord, Role
from serving.auth import (
    DEFAULT_ADMIN_TOKEN,
    Authenticator,
    AuthError,
    Principal,
    PrincipalStore,
    bearer_token,
    check_admin_token,
    is_loopback,
    new_token,
    token_hash,
)
from serving.server import Server


class FakePrincipals:
    """The lookup of PrincipalStore over a dict (hash → record)."""

    def __init__(self, *records: PrincipalRecord) -> None:
        self.by_hash = {r.token_sha256: r for r in records}

    async def lookup(self, digest: str) -> PrincipalRecord | None:
        return self.by_hash.get(digest)


def record(name: str, role: str, token: str, revoked: bool = False) -> PrincipalRecord:
    return PrincipalRecord.model_validate(
        {
            "name": name,
            "role": role,
            "token_sha256": token_hash(token),
            "created_by": "test",
            "created_at": 1.0,
            "revoked_at": 2.0 if revoked else None,
        }
    )


def authenticator(*records: PrincipalRecord, bootstrap: str = "boot-token") -> Authenticator:
    return Authenticator(cast(PrincipalStore, FakePrincipals(*records)), SecretStr(bootstrap))


def test_tokens_are_random_and_stored_as_sha256() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("sr_") and len(a) >= 40
    assert len(token_hash(a)) == 64 and token_hash(a) == token_hash(a) != token_hash(b)


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        (b"Bearer abc", "abc"),
        ("Bearer ", None),
        ("abc", None),
        (None, None),
    ],
)
def test_bearer_token(value: str | bytes | None, token: str | None) -> None:
    assert bearer_token(value) == token


def test_roles_are_ordered_and_parsed() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.parse(" Operator ") is Role.OPERATOR
    with pytest.raises(
        ValueError, match="unknown role 'root' \\(one of viewer, operator, admin\\)"
    ):
        Role.parse("root")


@pytest.mark.parametrize(
    ("addr", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:1", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("10.0.0.5:50051", False),
        ("server:50051", False),
    ],
)
def test_loopback(addr: str, loopback: bool) -> None:
    assert is_loopback(addr) is loopback


def test_default_or_short_token_refused_off_loopback_only() -> None:
    assert Settings.model_fields["admin_token"].default.get_secret_value() == DEFAULT_ADMIN_TOKEN
    for token in (DEFAULT_ADMIN_TOKEN, "", "short"):
        check_admin_token(SecretStr(token), "127.0.0.1:50051")  # dev: allowed
        with pytest.raises(ConfigError, match=r"^STREAMREC_ADMIN_TOKEN .*refusing to listen on"):
            check_admin_token(SecretStr(token), "0.0.0.0:50051")
    check_admin_token(SecretStr("x" * 32), "0.0.0.0:50051")


def test_the_server_refuses_to_start_with_the_default_token_off_loopback() -> None:
    settings = Settings().model_copy(
        update={
            "grpc_addr": "0.0.0.0:0",
            "server_metrics_port": 0,
            "admin_token": SecretStr(DEFAULT_ADMIN_TOKEN),
        }
    )
    with pytest.raises(ConfigError, match="is the default 'change-me'"):
        asyncio.run(Server(settings, log_exposures=False).start())


async def test_authenticate() -> None:
    auth = authenticator(record("vera", "viewer", "t-vera"), record("old", "admin", "t-old", True))
    assert await auth.authenticate("boot-token") == Principal(BOOTSTRAP_PRINCIPAL, Role.ADMIN)
    assert await auth.authenticate("t-vera") == Principal("vera", Role.VIEWER)
    for token, message in (
        (None, "missing admin token"),
        ("nope", "unknown admin token"),
        ("t-old", "token of principal 'old' was revoked"),
    ):
        with pytest.raises(AuthError, match=message) as info:
            await auth.authenticate(token)
        assert info.value.kind == "unauthenticated"


async def test_an_empty_bootstrap_token_matches_nothing() -> None:
    auth = authenticator(bootstrap="")
    with pytest.raises(AuthError, match="unknown admin token"):
        await auth.authenticate("")


def test_authorise_by_role() -> None:
    operator = Principal("otto", Role.OPERATOR)
    Authenticator.authorise(operator, Role.VIEWER, "GetAudit")
    Authenticator.authorise(operator, Role.OPERATOR, "PauseExperiment")
    with pytest.raises(AuthError, match=r"'otto' \(operator\) may not CreateRule: needs admin"):
        Authenticator.authorise(operator, Role.ADMIN, "CreateRule")
