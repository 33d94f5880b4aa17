"""broker/mtls.py: which client certificate CN may act for which mailbox, in each mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox
from broker.mtls import CertificateBinding, common_name
from broker.settings import Settings

MB1 = Mailbox("MB1", "password", "Trust", "X26")
ALICE = Mailbox("X26ABC1", "password", "TESTMB1", "X26")
NO_ODS = Mailbox("MB2", "password", ods_code="")
LIVE = CertificateBinding("required")
ODS_WIDE = CertificateBinding("required", ods_wide=True)


def subject_cn(cn: str | None) -> dict[str, Any]:
    subject: list[tuple[tuple[str, str], ...]] = [(("countryName", "GB"),)]
    if cn is not None:
        subject.append((("commonName", cn),))
    return {"subject": tuple(subject)}


@pytest.mark.parametrize(
    ("cn", "mailbox"),
    [
        ("MB1", MB1),
        ("mb1", MB1),
        ("MB1.X26.api.mesh-client.nhs.uk", MB1),
        ("mb1.x26.API.Mesh-Client.NHS.uk", MB1),
        ("X26ABC1.X26.api.mesh-client.nhs.uk", ALICE),
        ("MB2", NO_ODS),
    ],
)
def test_the_mailbox_id_or_its_full_live_name_matches(cn: str, mailbox: Mailbox) -> None:
    assert LIVE.matches(cn, mailbox)
    assert ODS_WIDE.matches(cn, mailbox)


@pytest.mark.parametrize(
    "cn",
    [
        "MB1.evil.example",  # the first label alone once let any CN starting "MB1." through
        "MB1.X26",
        "MB1.X26.api.mesh-client.nhs.uk.evil.example",
        "MB1.X27.api.mesh-client.nhs.uk",  # another organisation's ODS code
        "MB1.X26.api.mesh-client.nhs",
        "MB1.X26.other.nhs.uk",
        "xMB1.X26.api.mesh-client.nhs.uk",
        "MB1X.X26.api.mesh-client.nhs.uk",
        "MB1.",
        " MB1",
        "MB10",
        "SERVER001.X26.api.mesh-client.nhs.uk",  # the ODS-wide form, off by default
        "X26.api.mesh-client.nhs.uk",
        "",
    ],
)
def test_anything_else_does_not(cn: str) -> None:
    assert not LIVE.matches(cn, MB1)


@pytest.mark.parametrize(
    ("cn", "mailbox", "expected"),
    [
        ("SERVER001.X26.api.mesh-client.nhs.uk", MB1, True),
        ("server001.x26.api.mesh-client.nhs.uk", ALICE, True),
        ("X26ABC2.X26.api.mesh-client.nhs.uk", ALICE, True),  # another mailbox of the same organisation
        ("SERVER001.X27.api.mesh-client.nhs.uk", MB1, False),
        ("*.X26.api.mesh-client.nhs.uk", MB1, False),
        (".X26.api.mesh-client.nhs.uk", MB1, False),
        ("A.B.X26.api.mesh-client.nhs.uk", MB1, False),
        ("SERVER001.X26.evil.example", MB1, False),
        ("SERVER001.X26.api.mesh-client.nhs.uk", NO_ODS, False),
        ("SERVER001..api.mesh-client.nhs.uk", NO_ODS, False),
    ],
)
def test_the_ods_wide_form_only_when_asked_for(cn: str, mailbox: Mailbox, expected: bool) -> None:
    assert ODS_WIDE.matches(cn, mailbox) is expected
    assert not LIVE.matches(cn, mailbox)


def test_a_configured_suffix_replaces_the_live_one() -> None:
    test_env = CertificateBinding("required", suffix="mesh.test.example")
    assert test_env.matches("MB1.X26.mesh.test.example", MB1)
    assert test_env.matches("MB1", MB1)
    assert not test_env.matches("MB1.X26.api.mesh-client.nhs.uk", MB1)
    assert CertificateBinding("required", suffix="MESH.Test.Example").matches("mb1.x26.mesh.test.example", MB1)


def refusal(binding: CertificateBinding, peer_cert: dict[str, Any] | None, mailbox: Mailbox = MB1) -> ErrorCode | None:
    try:
        binding.check(peer_cert, mailbox)
    except BrokerError as exc:
        assert exc.code.spec.status == 403
        return exc.code
    return None


def test_modes() -> None:
    good, stranger = subject_cn("MB1.X26.api.mesh-client.nhs.uk"), subject_cn("MB1.evil.example")
    off, optional, required = (CertificateBinding(mode) for mode in ("off", "optional", "required"))
    for binding in (off, optional, required):
        assert refusal(binding, good) is None
    # off: certificates are not looked at (the TLS context asks for none).
    assert refusal(off, None) is None
    assert refusal(off, stranger) is None
    # optional: none sent is fine, but one that is sent must match.
    assert refusal(optional, None) is None
    assert refusal(optional, stranger) is ErrorCode.AUTH_CERTIFICATE
    assert refusal(optional, subject_cn(None)) is ErrorCode.AUTH_CERTIFICATE
    assert refusal(optional, {}) is ErrorCode.AUTH_CERTIFICATE
    # required: one must be sent, and match.
    assert refusal(required, None) is ErrorCode.AUTH_CERTIFICATE
    assert refusal(required, stranger) is ErrorCode.AUTH_CERTIFICATE


def test_from_settings() -> None:
    assert CertificateBinding.from_settings(Settings()) == CertificateBinding("off", "api.mesh-client.nhs.uk", False)
    tls = {"tls_cert": Path("/c.pem"), "tls_key": Path("/k.pem"), "tls_client_ca": Path("/ca.pem")}
    settings = Settings.from_env(
        {"MESH_TLS_CLIENT_CN_SUFFIX": " Mesh.Test.Example ", "MESH_TLS_CLIENT_CN_ODS_WIDE": "on"},
        tls_client_cert="optional",
        **tls,
    )
    assert CertificateBinding.from_settings(settings) == CertificateBinding("optional", "mesh.test.example", True)


def test_common_name() -> None:
    assert common_name(subject_cn("a.b")) == "a.b"
    assert common_name(subject_cn(None)) is None
    assert common_name({}) is None
    assert common_name(None) is None
