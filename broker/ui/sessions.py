"""The web page's sign-in rules: sessions (idle and absolute expiry), lock-out with back-off, sign out.

A session is a random token in a cookie; the store keeps only its SHA-256, so a copy of the database signs nobody
in. Failed sign-ins count against the mailbox tried and against the client's address, each with its threshold; a
lock refuses sign-in without checking the password at all, so guessing gains nothing while it lasts.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from broker.auth import Authenticator
from broker.clock import SYSTEM_CLOCK, Clock
from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox
from broker.store.protocol import MailboxLookup, WebSession, WebSessionStore
from broker.ui.config import LockoutPolicy, UiConfig

#: A session's last use is written at most this often: idle expiry is exact to within it, and a page view that
#: follows another costs no write.
TOUCH_EVERY = timedelta(minutes=1)


class SessionStore(MailboxLookup, WebSessionStore, Protocol):
    """What the sign-in rules read and change."""


class SignInRefused(Exception):
    """The mailbox ID and password did not match (or the mailbox is unknown): one answer for both."""

    def __init__(self, locked_until: datetime | None = None):
        super().__init__("sign-in refused")
        #: Set when this failure locked sign-in.
        self.locked_until = locked_until


class SignInLocked(Exception):
    """Sign-in is locked for the mailbox or the address until a time; the password was not checked."""

    def __init__(self, until: datetime):
        super().__init__(f"sign-in locked until {until.isoformat()}")
        self.until = until


class MailboxInactive(Exception):
    """The password was right but the mailbox is deactivated."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session and the token for its cookie (the only place the token exists)."""

    token: str
    session: WebSession


def session_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mailbox_key(mailbox_id: str) -> str:
    return f"mailbox:{mailbox_id.strip().upper()}"


def address_key(address: str) -> str:
    return f"address:{address}"


class WebSessions:
    def __init__(
        self, store: SessionStore, authenticator: Authenticator, config: UiConfig, *, clock: Clock = SYSTEM_CLOCK
    ):
        self._store = store
        self._authenticator = authenticator
        self._config = config
        self._clock = clock

    async def sign_in(self, mailbox_id: str, password: str, address: str) -> SignedIn:
        """A session for the mailbox whose MESH password this is (checked by the API's own code), or SignInLocked,
        SignInRefused (counted against mailbox and address) or MailboxInactive."""
        now = self._clock.now()
        keys = (mailbox_key(mailbox_id), address_key(address))
        locked = await self._store.sign_in_locked_until(keys, now)
        if locked is not None:
            raise SignInLocked(locked)
        try:
            mailbox = await self._authenticator.check_password(mailbox_id, password)
        except BrokerError as exc:
            if exc.code is ErrorCode.AUTH_INACTIVE_MAILBOX:
                raise MailboxInactive(mailbox_id) from None
            locked = await self._count_failure(keys, now)
            raise SignInRefused(locked) from None
        # Only the mailbox's count is cleared: one good password must not reset an address trying many mailboxes.
        await self._store.clear_sign_in_failures(keys[0])
        return await self._start(mailbox.mailbox_id, (mailbox.mailbox_id,), now)

    async def sign_in_user(self, user_id: str, mailboxes: tuple[str, ...]) -> SignedIn:
        """A session for someone an identity provider vouched for, acting as the first of their mailboxes."""
        return await self._start(user_id, mailboxes, self._clock.now())

    async def current(self, token: str | None) -> WebSession | None:
        """The live session this cookie token belongs to; an expired one is forgotten and None returned."""
        if not token:
            return None
        key = session_key(token)
        session = await self._store.get_web_session(key)
        if session is None:
            return None
        now = self._clock.now()
        if now >= session.expires_at or now - session.seen_at >= self._config.session_idle:
            await self._store.delete_web_session(key)
            return None
        if now - session.seen_at >= TOUCH_EVERY:
            await self._store.touch_web_session(key, now)
        return session

    async def acting_mailbox(self, session: WebSession) -> Mailbox | None:
        """The mailbox the session acts as, while it exists and is active."""
        mailbox = await self._store.get_mailbox(session.mailbox_id)
        return mailbox if mailbox is not None and mailbox.active else None

    async def switch_mailbox(self, session: WebSession, mailbox_id: str) -> bool:
        """Act as another of the session's mailboxes; False (no change) for one it may not use."""
        if mailbox_id not in session.mailboxes:
            return False
        await self._store.switch_web_session_mailbox(session.session_key, mailbox_id)
        return True

    async def sign_out(self, session: WebSession) -> None:
        await self._store.delete_web_session(session.session_key)

    async def _start(self, user_id: str, mailboxes: tuple[str, ...], now: datetime) -> SignedIn:
        # Expired sessions and stale counts are cleared as people sign in: the work grows with use, never idle.
        await self._store.purge_web_sign_ins(
            now, now - self._config.session_idle, now - self._config.mailbox_lockout.quiet
        )
        token = secrets.token_urlsafe(32)
        session = WebSession(
            session_key=session_key(token),
            user_id=user_id,
            mailbox_id=mailboxes[0],
            mailboxes=mailboxes,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            seen_at=now,
            expires_at=now + self._config.session_lifetime,
        )
        await self._store.create_web_session(session)
        return SignedIn(token, session)

    async def _count_failure(self, keys: tuple[str, str], now: datetime) -> datetime | None:
        """Count a failure against the mailbox and the address; the latest lock it set, if any."""
        policies: tuple[LockoutPolicy, LockoutPolicy] = (self._config.mailbox_lockout, self._config.address_lockout)
        latest: datetime | None = None
        for key, policy in zip(keys, policies, strict=True):
            count = await self._store.note_sign_in_failure(key, now, now - policy.quiet)
            lock = policy.lock_for(count)
            if lock is not None:
                until = now + lock
                await self._store.lock_sign_in(key, until)
                latest = until if latest is None else max(latest, until)
        return latest
