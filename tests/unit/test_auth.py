"""broker/auth.py: token parsing order, the HMAC every client computes, the authenticator's checks, mTLS binding."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import mesh_client
import pytest

from broker import auth
from broker.clock import ManualClock
from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox
from broker.mtls import CertificateBinding
from broker.store.protocol import MetadataStore
from tests.unit.fakes import FakeStore

KEY = b"TestKey"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
GOOD = "NHSMESH X26ABC1:3f2a:0:202506011200:" + "ab" * 32


def code_of(header: str | None, path: str | None = "X26ABC1") -> ErrorCode:
    with pytest.raises(BrokerError) as raised:
        auth.parse_token(header, path)
    return raised.value.code


def test_parse_token_fields() -> None:
    token = auth.parse_token(GOOD, "X26ABC1")
    assert token == auth.Token("X26ABC1", "3f2a", "0", "202506011200", "ab" * 32)
    assert token.replay_key == "X26ABC1:3f2a:0"
    assert auth.parse_token(GOOD, None) == token
    assert auth.parse_token("nhsmesh " + GOOD[8:], "X26ABC1") == token


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer X26ABC1:3f2a:0:202506011200:abcd",
        "NHSMESHX26ABC1:3f2a:0:202506011200:abcd",
        "X26ABC1:3f2a:0:202506011200:abcd",
        "NHSMESH X26ABC1:3f2a:0:202506011200",
        "NHSMESH X26ABC1:3f2a:0:202506011200:abcd:extra",
        "NHSMESH X26ABC1::0:202506011200:abcd",
        "NHSMESH X26ABC1:3f2a:x1:202506011200:abcd",
        "NHSMESH X26ABC1:3f2a::202506011200:abcd",
        "NHSMESH X26ABC1:3f2a:0:20250601120:abcd",
        "NHSMESH X26ABC1:3f2a:0:2025060112000:abcd",
        "NHSMESH X26ABC1:3f2a:0:2025-06-0112:abcd",
        "NHSMESH X26ABC1:3f2a:0:202506011200:",
    ],
)
def test_parse_token_structural_failures(header: str | None) -> None:
    assert code_of(header) is ErrorCode.AUTH_HEADER_UNREADABLE


def test_parse_token_space_in_mailbox() -> None:
    assert code_of("NHSMESH X26 ABC1:3f2a:0:202506011200:abcd", None) is ErrorCode.AUTH_HEADER_UNREADABLE
    assert code_of("NHSMESH :3f2a:0:202506011200:abcd", None) is ErrorCode.AUTH_HEADER_UNREADABLE


@pytest.mark.parametrize(
    "header",
    [
        "NHSMESH OTHER:3f2a:0:202506011200:abcd",
        "NHSMESH OTHER:only-two",
        "NHSMESH OTHER:3f2a:notdigits:bad:",
        "NHSMESH x26abc1:3f2a:0:202506011200:abcd",
    ],
)
def test_parse_token_reports_a_mailbox_mismatch_before_structure(header: str) -> None:
    assert code_of(header, "X26ABC1") is ErrorCode.AUTH_MAILBOX_MISMATCH


def test_token_time() -> None:
    assert auth.token_time(auth.parse_token(GOOD, None)) == NOW
    bad_month = auth.Token("MB", "n", "0", "202513011200", "ab")
    with pytest.raises(BrokerError) as raised:
        auth.token_time(bad_month)
    assert raised.value.code is ErrorCode.AUTH_HEADER_UNREADABLE


@pytest.mark.parametrize(("mailbox", "password"), [("X26ABC1", "password"), ("ALICE", "p$$:w0rd!")])
def test_make_token_matches_mesh_client(mailbox: str, password: str) -> None:
    generator = mesh_client.AuthTokenGenerator(KEY, mailbox, password)
    for count in range(3):
        theirs = generator.generate_token()
        _, nonce, nonce_count, timestamp, _ = theirs.removeprefix("NHSMESH ").split(":")
        at = datetime.strptime(timestamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
        assert nonce_count == str(count)
        ours = auth.make_token(KEY, mailbox, password, nonce=nonce, nonce_count=count, at=at)
        assert ours == theirs


def test_make_token_uses_utc() -> None:
    plus_one = NOW.astimezone(timezone(timedelta(hours=1)))
    token = auth.make_token(KEY, "MB", "pw", nonce="n", nonce_count=0, at=plus_one)
    assert ":202506011200:" in token


# Authenticator --------------------------------------------------------------------------------------------------

ALICE = Mailbox("X26ABC1", "password", "TESTMB1", "X26")
INACTIVE = Mailbox("X26ABC9", "password", "OLD", "X26", active=False)


def authenticator(store: FakeStore, clock: ManualClock, **kw: Any) -> auth.Authenticator:
    return auth.Authenticator(cast(MetadataStore, store), KEY, clock_skew=timedelta(hours=2), clock=clock, **kw)


def token(
    at: datetime = NOW, *, mailbox: str = "X26ABC1", password: str = "password", nonce: str = "n1", count: int = 0
) -> str:
    return auth.make_token(KEY, mailbox, password, nonce=nonce, nonce_count=count, at=at)


async def reject(authn: auth.Authenticator, header: str, path: str | None = "X26ABC1", **kw: Any) -> ErrorCode:
    with pytest.raises(BrokerError) as raised:
        await authn.authenticate(header, path, **kw)
    assert raised.value.code.spec.status == 403
    return raised.value.code


async def test_a_good_token_authenticates_once() -> None:
    store = FakeStore(ALICE)
    authn = authenticator(store, ManualClock(NOW))
    assert await authn.authenticate(token(), "X26ABC1") == ALICE
    assert await reject(authn, token()) is ErrorCode.AUTH_REPLAYED_TOKEN
    assert await authn.authenticate(token(count=1), "X26ABC1") == ALICE
    assert await authn.authenticate(token(nonce="n2"), None) == ALICE
    # Remembered until the token could no longer pass the clock check anyway.
    assert store.tokens["X26ABC1:n1:0"] >= NOW + timedelta(hours=2)


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (timedelta(0), True),
        (timedelta(hours=-2), True),
        (timedelta(hours=2), True),
        (timedelta(hours=-2, minutes=-1), False),
        (timedelta(hours=2, minutes=1), False),
        (timedelta(days=-1), False),
    ],
)
async def test_clock_window_edges(offset: timedelta, ok: bool) -> None:
    store = FakeStore(ALICE)
    authn = authenticator(store, ManualClock(NOW))
    header = token(NOW + offset)
    if ok:
        assert await authn.authenticate(header, "X26ABC1") == ALICE
    else:
        assert await reject(authn, header) is ErrorCode.AUTH_STALE_TOKEN
        assert store.tokens == {}


async def test_clock_window_counts_seconds_of_server_time() -> None:
    authn = authenticator(FakeStore(ALICE), ManualClock(NOW + timedelta(seconds=30)))
    assert await reject(authn, token(NOW - timedelta(hours=2))) is ErrorCode.AUTH_STALE_TOKEN
    assert await authn.authenticate(token(NOW + timedelta(hours=2)), "X26ABC1") == ALICE


async def test_wrong_password_or_key_is_invalid_and_burns_nothing() -> None:
    store = FakeStore(ALICE)
    authn = authenticator(store, ManualClock(NOW))
    assert await reject(authn, token(password="wrong")) is ErrorCode.AUTH_INVALID_TOKEN
    other_key = auth.make_token(b"OtherKey", "X26ABC1", "password", nonce="n1", nonce_count=0, at=NOW)
    assert await reject(authn, other_key) is ErrorCode.AUTH_INVALID_TOKEN
    assert store.tokens == {}
    # The same nonce and count still work with the right password.
    assert await authn.authenticate(token(), "X26ABC1") == ALICE


async def test_digest_compares_case_insensitively() -> None:
    authn = authenticator(FakeStore(ALICE), ManualClock(NOW))
    header = token()
    prefix, digest = header.rsplit(":", 1)
    assert digest == digest.lower()
    assert await authn.authenticate(f"{prefix}:{digest.upper()}", "X26ABC1") == ALICE


async def test_unknown_and_inactive_mailboxes() -> None:
    store = FakeStore(ALICE, INACTIVE)
    authn = authenticator(store, ManualClock(NOW))
    assert await reject(authn, token(mailbox="NOBODY"), "NOBODY") is ErrorCode.AUTH_NO_MAILBOX
    assert await reject(authn, token(mailbox="X26ABC9"), "X26ABC9") is ErrorCode.AUTH_INACTIVE_MAILBOX
    assert await reject(authn, token(mailbox="X26ABC9", password="wrong"), "X26ABC9") is ErrorCode.AUTH_INVALID_TOKEN
    assert store.tokens == {}


async def test_parse_errors_come_first() -> None:
    authn = authenticator(FakeStore(ALICE), ManualClock(NOW))
    assert await reject(authn, token(), "X26ABC2") is ErrorCode.AUTH_MAILBOX_MISMATCH
    assert await reject(authn, "") is ErrorCode.AUTH_HEADER_UNREADABLE


def subject_cn(common_name: str) -> dict[str, Any]:
    """A peer certificate as ssl.SSLObject.getpeercert() gives it, reduced to its subject."""
    return {"subject": ((("countryName", "GB"),), (("commonName", common_name),))}


async def test_the_authenticator_applies_the_certificate_binding() -> None:
    """After the token checks and before the token is spent: a refused certificate burns no token."""
    store = FakeStore(ALICE)
    required = authenticator(store, ManualClock(NOW), certificates=CertificateBinding("required"))
    mailbox_cert = subject_cn("X26ABC1.X26.api.mesh-client.nhs.uk")
    assert await required.authenticate(token(), "X26ABC1", mailbox_cert) == ALICE
    assert await reject(required, token(count=1), peer_cert=subject_cn("X26ABC1.evil.example")) is (
        ErrorCode.AUTH_CERTIFICATE
    )
    assert await reject(required, token(count=2), peer_cert=None) is ErrorCode.AUTH_CERTIFICATE
    assert set(store.tokens) == {"X26ABC1:n1:0"}
    assert await reject(required, token(count=3, password="wrong"), peer_cert=None) is ErrorCode.AUTH_INVALID_TOKEN
    # No binding by default: the certificate is not looked at.
    anything = authenticator(FakeStore(ALICE), ManualClock(NOW))
    assert await anything.authenticate(token(), "X26ABC1", subject_cn("SOMEONE.ELSE")) == ALICE
