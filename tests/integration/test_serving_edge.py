"""The hardened serving edge on a real server (real Redis, grpc.aio over loopback).

TLS (a throwaway CA made here), mutual TLS, API keys, the per-caller rate limit, the in-flight
cap, the one-log-line answers of health / reflection / streaming errors, pii ids in requests,
and where /metrics binds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr
from redis.asyncio import Redis

from core.settings import Settings
from schemas import recommender_pb2 as pb
from schemas.keyspace import Keyspace
from serving import metrics
from serving.api_keys import hash_key
from serving.edge_tls import ClientTls, open_channel
from tests.integration.serving_support import (
    TOKEN,
    ctx,
    free_port,
    recommender,
    running,
    seed,
    serving_settings,
)
from tests.support import run_cli, stderr_lines

# --- a throwaway CA ---------------------------------------------------------------------------


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class Ca:
    """A CA that signs server and client certificates, all PEM files under ``root``."""

    def __init__(self, root: Path, name: str = "streamrec test CA") -> None:
        self.root = root
        self.key = _key()
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = _write_cert(self.cert, root / f"{name.replace(' ', '-')}.pem")

    def issue(self, common: str, *, server: bool) -> tuple[Path, Path]:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return (
            _write_cert(cert, self.root / f"{common}.pem"),
            _write_key(key, self.root / f"{common}.key"),
        )


async def _recommend(channel: grpc.aio.Channel, **kw: Any) -> pb.RecommendResponse:
    request = pb.RecommendRequest(user_id="u1", k=3, context=pb.Context(tenant="shop"))
    response: pb.RecommendResponse = await recommender(channel).Recommend(
        request, timeout=5.0, **kw
    )
    return response


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


# --- TLS -----------------------------------------------------------------------------------


async def test_tls_refuses_plaintext_and_serves_a_client_trusting_the_ca(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    ca = Ca(tmp_path)
    cert, key = ca.issue("server", server=True)
    cfg = serving_settings(settings, tmp_path, grpc_tls_cert_file=cert, grpc_tls_key_file=key)
    async with running(cfg) as (server, plaintext):
        assert await _code(_recommend(plaintext)) == grpc.StatusCode.UNAVAILABLE
        async with open_channel(server.address, ClientTls(ca.cert_file)) as channel:
            reply = await _recommend(channel)
            assert [i.item_id for i in reply.items] == ["b", "c", "d"]
        # a CA that did not sign the server's certificate is not trusted
        other = Ca(tmp_path, "other CA")
        async with open_channel(server.address, ClientTls(other.cert_file)) as channel:
            assert await _code(_recommend(channel)) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    ca = Ca(tmp_path)
    cert, key = ca.issue("server", server=True)
    client_cert, client_key = ca.issue("client", server=False)
    cfg = serving_settings(
        settings,
        tmp_path,
        grpc_tls_cert_file=cert,
        grpc_tls_key_file=key,
        grpc_tls_client_ca_file=ca.cert_file,
    )
    async with running(cfg) as (server, _plaintext):
        async with open_channel(server.address, ClientTls(ca.cert_file)) as channel:
            assert await _code(_recommend(channel)) == grpc.StatusCode.UNAVAILABLE
        tls = ClientTls(ca.cert_file, client_cert, client_key)
        async with open_channel(server.address, tls) as channel:
            assert len((await _recommend(channel)).items) == 3


# --- API keys, rate limit, in-flight cap ---------------------------------------------------------


def _refused(method: str, reason: str) -> float:
    return metrics.REFUSED.labels(method, reason)._value.get()  # type: ignore[no-any-return]


async def test_a_caller_over_its_rate_limit_is_refused_while_another_is_served(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    cfg = serving_settings(
        settings,
        tmp_path,
        serving_api_keys=(f"shop-web:{hash_key('key-web')}", f"shop-app:{hash_key('key-app')}"),
        serving_rate_limit_per_s=0.1,  # no token comes back during the test
        serving_rate_limit_burst=3,
    )
    before = _refused("Recommend", "rate_limited")
    async with running(cfg) as (_server, channel):
        web = (("x-api-key", "key-web"),)
        app = (("x-api-key", "key-app"),)
        codes = [await _code(_recommend(channel, metadata=web)) for _ in range(5)]
        assert codes[:3] == [grpc.StatusCode.OK] * 3
        assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        try:
            await _recommend(channel, metadata=web)
        except grpc.aio.AioRpcError as exc:
            assert "rate limit" in (exc.details() or "") and "key:shop-web" in (exc.details() or "")
        # the other caller has its own bucket
        assert len((await _recommend(channel, metadata=app)).items) == 3
        # no key, or an unknown one: UNAUTHENTICATED
        assert await _code(_recommend(channel)) == grpc.StatusCode.UNAUTHENTICATED
        bad = (("x-api-key", "nope"),)
        assert await _code(_recommend(channel, metadata=bad)) == grpc.StatusCode.UNAUTHENTICATED
        # health is never refused
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert _refused("Recommend", "rate_limited") - before == 3


async def test_calls_past_the_in_flight_cap_get_resource_exhausted(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    cfg = serving_settings(settings, tmp_path, serving_max_in_flight=2)
    before = _refused("Recommend", "overloaded")
    async with running(cfg) as (server, channel):
        assert server.recommender is not None
        real = server.recommender.recommend
        release = asyncio.Event()

        async def slow(**kw: Any) -> Any:
            await release.wait()  # holds its place in flight until released
            return await real(**kw)

        server.recommender.recommend = slow  # type: ignore[method-assign]
        held = [asyncio.ensure_future(_recommend(channel)) for _ in range(2)]
        await asyncio.sleep(0.5)  # both admitted and waiting
        try:
            await _recommend(channel)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "2 calls in flight" in (exc.details() or "")
        else:
            pytest.fail("a third call in flight was served")
        release.set()
        assert all(len(r.items) == 3 for r in await asyncio.gather(*held))
        assert len((await _recommend(channel)).items) == 3  # room again
    assert _refused("Recommend", "overloaded") - before == 1


# --- errors on health, reflection and streaming methods: a status and one log line ------------


async def test_health_list_and_broken_streaming_calls_log_one_line_each(
    settings: Settings, redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path)) as (_server, channel):
        caplog.clear()
        caplog.set_level(logging.INFO)
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(20):
            listed = await health.List(health_pb2.HealthListRequest(), timeout=5.0)
            assert listed.statuses["streamrec.v1.Recommender"].status == (
                health_pb2.HealthCheckResponse.SERVING
            )
        assert not [r for r in caplog.records if "Health/List" in r.getMessage()]
        assert not [r for r in caplog.records if r.exc_info is not None]

        raw = {"request_serializer": None, "response_deserializer": None}
        watch = channel.unary_stream("/grpc.health.v1.Health/Watch", **raw)
        reflect = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", **raw
        )
        codes = []
        for _ in range(10):
            try:
                async for _reply in watch(b"\xff\xff\xff", timeout=5.0):
                    pass
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
            try:
                async for _reply in reflect(iter([b"\xff\xff\xff"]), timeout=5.0):
                    pass
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 20
        await asyncio.sleep(0.2)
        lines = [
            r
            for r in caplog.records
            if "Health/Watch" in r.getMessage() or "ServerReflection" in r.getMessage()
        ]
        assert len(lines) == 20, [r.getMessage() for r in lines]
        assert all("\n" not in r.getMessage() for r in lines)
        assert not [r for r in caplog.records if r.exc_info is not None]


# --- ids ---------------------------------------------------------------------------------------


async def test_requests_with_bad_or_pii_user_ids_are_invalid_arguments(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    async with running(serving_settings(settings, tmp_path)) as (_server, channel):
        stub = recommender(channel)
        for user_id, message in [
            ("   ", "only whitespace"),
            ("u\x001", "control character"),
            ("jane.doe@example.com", "e-mail address"),
            ("+44 20 7946 0958", "phone number"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Recommend(pb.RecommendRequest(user_id=user_id, k=3), timeout=5.0)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (caught.value.details() or "")
            assert user_id.strip() == "" or user_id not in (caught.value.details() or "")


async def test_hashed_user_ids_meet_the_state_written_under_the_same_pseudonym(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    from schemas.ids import PiiPolicy, Pseudonyms

    keys = Keyspace(settings.key_prefix)
    world = await seed(redis, keys)
    secret = "a-test-secret-of-enough-length"
    pseudonym = Pseudonyms(PiiPolicy.HASH, secret.encode()).hashed("jane@example.com")
    await redis.rename(keys.user_recent("u1"), keys.user_recent(pseudonym))
    await redis.rename(keys.user_seen("u1"), keys.user_seen(pseudonym))
    cfg = serving_settings(settings, tmp_path, pii_policy="hash", pii_hash_key=SecretStr(secret))
    async with running(cfg) as (_server, channel):
        reply = await recommender(channel).Recommend(
            pb.RecommendRequest(user_id="jane@example.com", k=3, context=ctx(world)), timeout=5.0
        )
        assert [i.item_id for i in reply.items] == ["b", "c", "d"]


# --- /metrics binds where the gRPC port binds ---------------------------------------------------


async def test_metrics_bind_the_grpc_host_unless_told(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    port = free_port()
    cfg = serving_settings(settings, tmp_path, server_metrics_port=port)
    async with running(cfg) as (server, _channel):
        assert server._metrics_http is not None
        assert server._metrics_http.server_address[0] == "127.0.0.1"
    other = free_port()
    cfg = serving_settings(settings, tmp_path, server_metrics_port=other, metrics_host="127.0.0.2")
    async with running(cfg) as (server, _channel):
        assert server._metrics_http is not None
        assert server._metrics_http.server_address[0] == "127.0.0.2"


# --- the CLI clients over TLS -------------------------------------------------------------------


async def test_cli_clients_reach_a_mutual_tls_port_with_an_api_key(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    await seed(redis, Keyspace(settings.key_prefix))
    ca = Ca(tmp_path)
    cert, key = ca.issue("server", server=True)
    client_cert, client_key = ca.issue("client", server=False)
    cfg = serving_settings(
        settings,
        tmp_path,
        grpc_tls_cert_file=cert,
        grpc_tls_key_file=key,
        grpc_tls_client_ca_file=ca.cert_file,
        serving_api_keys=(f"cli:{hash_key('cli-key')}",),
    )
    tls = ["--tls-ca", str(ca.cert_file), "--tls-cert", str(client_cert)]
    tls += ["--tls-key", str(client_key)]
    async with running(cfg, log_exposures=False) as (server, _plaintext):
        env = {"STREAMREC_GRPC_ADDR": server.address, "STREAMREC_NETWORK_TIMEOUT_S": "5"}
        keyed = {**env, "STREAMREC_GRPC_CLIENT_API_KEY": "cli-key"}
        plaintext, no_key, served, admin_call = await asyncio.gather(
            asyncio.to_thread(run_cli, "recommend", "u1", "--k", "3", env=keyed),
            asyncio.to_thread(run_cli, "recommend", "u1", "--k", "3", *tls, env=env),
            asyncio.to_thread(run_cli, "recommend", "u1", "--k", "3", "--json", *tls, env=keyed),
            asyncio.to_thread(
                run_cli,
                "admin",
                *tls,
                "principals",
                "list",
                env={**env, "STREAMREC_ADMIN_TOKEN": TOKEN},
            ),
        )
    assert plaintext.returncode == 2
    assert stderr_lines(plaintext)[-1].startswith("streamrec: error: server at")
    assert "a TLS port needs --tls-ca" in plaintext.stderr and "Traceback" not in plaintext.stderr
    assert no_key.returncode == 2 and "wants an API key" in no_key.stderr
    assert served.returncode == 0, served.stderr
    assert [i["item_id"] for i in json.loads(served.stdout)["items"]] == ["b", "c", "d"]
    assert admin_call.returncode == 0, admin_call.stderr
