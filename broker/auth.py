"""NHSMESH authentication: parse the token, check clock skew, HMAC and replay; the mTLS binding (broker/mtls.py)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from broker.clock import SYSTEM_CLOCK, Clock
from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox
from broker.mtls import CertificateBinding
from broker.store.protocol import MailboxLookup, TokenStore

SCHEME = "NHSMESH "
#: A used token is remembered this long after its own timestamp leaves the clock window.
REPLAY_MARGIN = timedelta(minutes=5)
NO_CLIENT_CERTIFICATES = CertificateBinding()


class AuthStore(MailboxLookup, TokenStore, Protocol):
    """What authentication reads (the caller's mailbox) and writes (the token, once)."""


@dataclass(frozen=True, slots=True)
class Token:
    mailbox_id: str
    nonce: str
    nonce_count: str
    timestamp: str
    digest: str

    @property
    def replay_key(self) -> str:
        return f"{self.mailbox_id}:{self.nonce}:{self.nonce_count}"


def parse_token(header: str | None, path_mailbox: str | None) -> Token:
    """Split `NHSMESH mailbox:nonce:count:timestamp:hash` in the sandbox's check order.

    The mailbox-mismatch check runs before the structural checks, as in the sandbox, so a client with the
    right shape but the wrong mailbox learns which is wrong. A token is ASCII (mesh-api.md section 2): anything
    else, such as bytes that are not UTF-8 (which aiohttp hands over as lone surrogates that the HMAC's encode
    and compare_digest refuse), cannot be one.
    """
    if not header or not header.strip() or not header.isascii():
        raise BrokerError(ErrorCode.AUTH_HEADER_UNREADABLE)
    if header[: len(SCHEME)].upper() != SCHEME:
        raise BrokerError(ErrorCode.AUTH_HEADER_UNREADABLE)
    parts = header[len(SCHEME) :].split(":")
    if path_mailbox is not None and parts[0] != path_mailbox:
        raise BrokerError(ErrorCode.AUTH_MAILBOX_MISMATCH)
    if len(parts) != 5:
        raise BrokerError(ErrorCode.AUTH_HEADER_UNREADABLE)
    mailbox_id, nonce, nonce_count, timestamp, digest = parts
    if (
        not mailbox_id
        or " " in mailbox_id
        or not nonce
        or not nonce_count.isdigit()
        or len(timestamp) != 12
        or not timestamp.isdigit()
        or not digest
    ):
        raise BrokerError(ErrorCode.AUTH_HEADER_UNREADABLE)
    return Token(mailbox_id, nonce, nonce_count, timestamp, digest)


def token_time(token: Token) -> datetime:
    """The token's `YYYYMMDDHHMM` (UTC). Sliced by hand: strptime was a tenth of the event loop's own work."""
    t = token.timestamp  # 12 digits, checked by parse_token
    try:
        return datetime(int(t[:4]), int(t[4:6]), int(t[6:8]), int(t[8:10]), int(t[10:12]), tzinfo=UTC)
    except ValueError:
        raise BrokerError(ErrorCode.AUTH_HEADER_UNREADABLE) from None


def make_token(shared_key: bytes, mailbox_id: str, password: str, *, nonce: str, nonce_count: int, at: datetime) -> str:
    """Build a token the way every MESH client does (used by the CLI's examples, tests and benchmarks)."""
    timestamp = at.astimezone(UTC).strftime("%Y%m%d%H%M")
    message = f"{mailbox_id}:{nonce}:{nonce_count}:{password}:{timestamp}"
    digest = hmac.new(shared_key, message.encode(), hashlib.sha256).hexdigest()
    return f"{SCHEME}{mailbox_id}:{nonce}:{nonce_count}:{timestamp}:{digest}"


class Authenticator:
    """Checks NHSMESH tokens against the store. Holds the keyed HMAC state, prepared once."""

    def __init__(
        self,
        store: AuthStore,
        shared_key: bytes,
        *,
        clock_skew: timedelta,
        certificates: CertificateBinding = NO_CLIENT_CERTIFICATES,
        clock: Clock = SYSTEM_CLOCK,
    ):
        self._store = store
        self._keyed = hmac.new(shared_key, digestmod=hashlib.sha256)
        self._skew = clock_skew
        self._certificates = certificates
        self._clock = clock

    def _expected_digest(self, token: Token, password: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{token.mailbox_id}:{token.nonce}:{token.nonce_count}:{password}:{token.timestamp}".encode())
        return mac.hexdigest()

    async def authenticate(
        self,
        header: str | None,
        path_mailbox: str | None,
        peer_cert: dict[str, Any] | None = None,
        *,
        admit: Callable[[Mailbox], None] | None = None,
    ) -> Mailbox:
        """The mailbox the request acts as, or BrokerError(403). path_mailbox None: the token names it. admit, if
        given, may refuse the proven mailbox (a node's limits, 429) before its token is spent."""
        token = parse_token(header, path_mailbox)
        issued = token_time(token)
        now = self._clock.now()
        if abs(now - issued) > self._skew:
            raise BrokerError(ErrorCode.AUTH_STALE_TOKEN)
        mailbox = await self._store.get_mailbox(token.mailbox_id)
        if mailbox is None:
            raise BrokerError(ErrorCode.AUTH_NO_MAILBOX)
        expected = self._expected_digest(token, mailbox.password)
        if not hmac.compare_digest(expected, token.digest.lower()):
            raise BrokerError(ErrorCode.AUTH_INVALID_TOKEN)
        if not mailbox.active:
            raise BrokerError(ErrorCode.AUTH_INACTIVE_MAILBOX)
        self._certificates.check(peer_cert, mailbox)
        if admit is not None:
            # Before the token is spent: mesh-client retries a 429 with the same token, which must not then be
            # taken for a replay (403).
            admit(mailbox)
        if not await self._store.use_token(token.replay_key, issued + self._skew + REPLAY_MARGIN):
            raise BrokerError(ErrorCode.AUTH_REPLAYED_TOKEN)
        return mailbox

    async def check_password(self, mailbox_id: str, password: str) -> Mailbox:
        """The web page's sign-in (broker/ui): the mailbox whose MESH password this is, with the checks a token
        gets around its HMAC (the mailbox exists, the password is its own, it is active) and their 403 codes.
        Both sides are hashed before comparing, so the time taken tells nothing of the password's length."""
        mailbox = await self._store.get_mailbox(mailbox_id.strip().upper())
        if mailbox is None:
            raise BrokerError(ErrorCode.AUTH_NO_MAILBOX)
        given, expected = (hashlib.sha256(p.encode()).digest() for p in (password, mailbox.password))
        if not hmac.compare_digest(given, expected):
            raise BrokerError(ErrorCode.AUTH_INVALID_TOKEN)
        if not mailbox.active:
            raise BrokerError(ErrorCode.AUTH_INACTIVE_MAILBOX)
        return mailbox
