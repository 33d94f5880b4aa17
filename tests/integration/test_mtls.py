"""Mutual TLS over real TLS: a client certificate bound to the mailbox by its whole CN, in the required and optional
modes, and the ODS-wide convention only when asked for."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import trustme
from mesh_client import MeshClient

from tests.integration.broker_process import (
    HOST,
    SHARED_KEY,
    BrokerProcess,
    client_certificate,
    server_certificates,
)
from tests.integration.conftest import MakeClient

ALICE, BOB, CAROL = "X26ABC1", "X26ABC2", "X26ABC3"  # ODS codes X26, X26, X27
ALICE_CN = "X26ABC1.X26.api.mesh-client.nhs.uk"
#: Alice's mailbox ID as the first label, then anything: once enough to act for her.
LOOKALIKE_CN = "X26ABC1.evil.example"
TEST_SUFFIX = "mesh.test.example"
SERVER_CN = f"SERVER001.X26.{TEST_SUFFIX}"  # the ODS-wide form, under a configured suffix


@dataclass(frozen=True)
class Pki:
    root: Path
    server_ca: trustme.CA
    client_ca: trustme.CA
    client_ca_path: Path
    alice_cert: tuple[str, str]
    lookalike_cert: tuple[str, str]
    server_cert: tuple[str, str]
    alice_test_cert: tuple[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("mtls")
    client_ca = trustme.CA()
    client_ca_path = root / "client-ca.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_path))
    clients = root / "clients"
    return Pki(
        root,
        trustme.CA(),
        client_ca,
        client_ca_path,
        client_certificate(client_ca, ALICE_CN, clients),
        client_certificate(client_ca, LOOKALIKE_CN, clients),
        client_certificate(client_ca, SERVER_CN, clients),
        client_certificate(client_ca, f"{ALICE}.X26.{TEST_SUFFIX}", clients),
    )


def _broker(pki: Pki, mode: str, name: str | None = None, **env: str) -> BrokerProcess:
    name = name or mode
    return BrokerProcess(
        data_dir=pki.root / f"data-{name}",
        env={
            "MESH_SHARED_KEY": SHARED_KEY,
            "MESH_DEMO": "on",
            "MESH_TLS_CLIENT_CA": str(pki.client_ca_path),
            "MESH_TLS_CLIENT_CERT": mode,
            **env,
        },
        certificates=server_certificates(pki.server_ca, pki.root / f"tls-{name}"),
        probe_cert=pki.alice_cert,
    )


@pytest.fixture(scope="module")
def required(pki: Pki) -> Iterator[BrokerProcess]:
    with _broker(pki, "required") as broker:
        yield broker


@pytest.fixture(scope="module")
def optional(pki: Pki) -> Iterator[BrokerProcess]:
    with _broker(pki, "optional") as broker:
        yield broker


def test_required_rejects_a_client_without_certificate(required: BrokerProcess, client_for: MakeClient) -> None:
    anonymous = client_for(required, ALICE, max_retries=0)
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is a ConnectionError
        anonymous.handshake()


def test_required_rejects_a_certificate_from_another_ca(
    required: BrokerProcess, client_for: MakeClient, tmp_path: Path
) -> None:
    stranger = client_certificate(trustme.CA(), ALICE_CN, tmp_path)
    client = client_for(required, ALICE, cert=stranger, max_retries=0)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.handshake()


def tls12_handshake(broker: BrokerProcess, cert: tuple[str, str] | None) -> str:
    """Complete a TLS 1.2 handshake (where client-certificate failures surface in the handshake itself)."""
    assert broker.ca is not None
    context = ssl.create_default_context(cafile=broker.ca)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(*cert)
    with (
        socket.create_connection((HOST, broker.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return str(tls.version())


def test_required_fails_the_tls_handshake_itself(required: BrokerProcess, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLError):
        tls12_handshake(required, None)
    with pytest.raises(ssl.SSLError):
        tls12_handshake(required, client_certificate(trustme.CA(), ALICE_CN, tmp_path))
    assert tls12_handshake(required, pki.alice_cert) == "TLSv1.2"


def test_required_accepts_the_mailbox_certificate(required: BrokerProcess, pki: Pki, client_for: MakeClient) -> None:
    alice = client_for(required, ALICE, cert=pki.alice_cert)
    assert alice.handshake() == b"hello"
    message_id = alice.send_message(BOB, b"over mutual TLS", workflow_id="TEST_WORKFLOW")
    assert alice.track_message(message_id)["status"] == "accepted"


def refused(client: MeshClient) -> int:
    with pytest.raises(requests.HTTPError) as raised:
        client.handshake()
    return int(raised.value.response.status_code)


def test_required_binds_the_whole_cn_to_one_mailbox(required: BrokerProcess, pki: Pki, client_for: MakeClient) -> None:
    # Alice's certificate does not act for Bob, though his mailbox has her ODS code (X26): that form is off.
    assert refused(client_for(required, BOB, cert=pki.alice_cert)) == 403
    assert refused(client_for(required, CAROL, cert=pki.alice_cert)) == 403
    # A CN whose first label is Alice's mailbox ID, signed by the trusted CA, is not Alice's.
    assert refused(client_for(required, ALICE, cert=pki.lookalike_cert)) == 403
    # Nor is the organisation-wide form, nor Alice's name under another suffix than the configured one.
    assert refused(client_for(required, ALICE, cert=pki.server_cert)) == 403
    assert refused(client_for(required, ALICE, cert=pki.alice_test_cert)) == 403


@pytest.fixture(scope="module")
def ods_wide(pki: Pki) -> Iterator[BrokerProcess]:
    settings = {"MESH_TLS_CLIENT_CN_SUFFIX": TEST_SUFFIX, "MESH_TLS_CLIENT_CN_ODS_WIDE": "on"}
    with _broker(pki, "required", "ods-wide", **settings) as broker:
        yield broker


def test_the_ods_wide_form_when_asked_for(ods_wide: BrokerProcess, pki: Pki, client_for: MakeClient) -> None:
    # SERVER001.X26.<suffix> acts for every X26 mailbox, and for no other organisation's.
    assert client_for(ods_wide, ALICE, cert=pki.server_cert).handshake() == b"hello"
    assert client_for(ods_wide, BOB, cert=pki.server_cert).handshake() == b"hello"
    assert refused(client_for(ods_wide, CAROL, cert=pki.server_cert)) == 403
    # The configured suffix replaces the live one.
    assert client_for(ods_wide, ALICE, cert=pki.alice_test_cert).handshake() == b"hello"
    assert refused(client_for(ods_wide, ALICE, cert=pki.alice_cert)) == 403
    assert refused(client_for(ods_wide, ALICE, cert=pki.lookalike_cert)) == 403


def test_required_still_checks_the_token(required: BrokerProcess, pki: Pki, client_for: MakeClient) -> None:
    intruder = client_for(required, ALICE, password="wrong", cert=pki.alice_cert)
    with pytest.raises(requests.HTTPError) as raised:
        intruder.handshake()
    assert raised.value.response.status_code == 403


def test_optional_accepts_a_client_without_certificate(optional: BrokerProcess, client_for: MakeClient) -> None:
    carol = client_for(optional, CAROL)
    assert carol.handshake() == b"hello"


def test_optional_accepts_a_certificate_too(optional: BrokerProcess, pki: Pki, client_for: MakeClient) -> None:
    assert client_for(optional, ALICE, cert=pki.alice_cert).handshake() == b"hello"


def test_optional_binds_a_certificate_that_is_sent(optional: BrokerProcess, pki: Pki, client_for: MakeClient) -> None:
    assert refused(client_for(optional, ALICE, cert=pki.lookalike_cert)) == 403
    assert refused(client_for(optional, BOB, cert=pki.alice_cert)) == 403
    alice = client_for(optional, ALICE, cert=pki.alice_cert)
    message_id = alice.send_message(BOB, b"over optional mutual TLS", workflow_id="TEST_WORKFLOW")
    assert alice.track_message(message_id)["status"] == "accepted"
