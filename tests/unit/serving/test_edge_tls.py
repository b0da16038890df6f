"""TLS settings of the serving edge (serving.edge_tls): files checked, clients configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError, SettingsError
from core.settings import load_settings
from serving.edge_tls import ClientTls, edge_tls_summary, server_credentials


def test_no_tls_by_default() -> None:
    cfg = load_settings()
    assert server_credentials(cfg) is None
    assert edge_tls_summary(cfg) == "plaintext"
    assert not ClientTls.from_settings(cfg).enabled


def test_missing_and_non_pem_files_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    cfg = load_settings(grpc_tls_cert_file=tmp_path / "missing.pem", grpc_tls_key_file=junk)
    with pytest.raises(ConfigError, match="cannot read STREAMREC_GRPC_TLS_CERT_FILE"):
        server_credentials(cfg)
    cfg = load_settings(grpc_tls_cert_file=junk, grpc_tls_key_file=junk)
    with pytest.raises(ConfigError, match="is not PEM"):
        server_credentials(cfg)


def test_settings_that_go_together(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    with pytest.raises(SettingsError, match="go together"):
        load_settings(grpc_tls_cert_file=pem)
    with pytest.raises(SettingsError, match="needs STREAMREC_GRPC_TLS_CERT_FILE"):
        load_settings(grpc_tls_client_ca_file=pem)
    cfg = load_settings(grpc_tls_cert_file=pem, grpc_tls_key_file=pem, grpc_tls_client_ca_file=pem)
    assert edge_tls_summary(cfg) == "mutual TLS"


def test_client_tls_needs_ca_for_a_certificate(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    with pytest.raises(ConfigError, match="needs its key"):
        ClientTls(pem, cert_file=pem)
    with pytest.raises(ConfigError, match="--tls-ca"):
        ClientTls(None, cert_file=pem, key_file=pem)
    flags = ClientTls.from_settings(load_settings(grpc_client_ca_file=pem), ca_file=tmp_path)
    assert flags.ca_file == tmp_path  # a flag wins over the setting
