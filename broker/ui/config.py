"""The web page's settings, read once from Settings: upload limits by client address, sessions, lock-out."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from broker.settings import Settings, ui_networks

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Room for the form's other fields and the multipart framing around the file, in an upload's Content-Length.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """After `failures` failed sign-ins with no quiet spell of `quiet` between them, sign-in is locked for `base`,
    doubling with each further failure up to `most`."""

    failures: int
    base: timedelta
    most: timedelta
    quiet: timedelta

    def lock_for(self, count: int) -> timedelta | None:
        """How long the count-th failure locks sign-in for, or None while under the threshold."""
        beyond = count - self.failures
        if beyond < 0:
            return None
        # Capped before doubling so that a count in the thousands cannot build a huge number.
        lock: timedelta = min(self.base * (2 ** min(beyond, 32)), self.most)
        return lock


@dataclass(frozen=True, slots=True)
class UiConfig:
    max_upload_bytes: int
    network_max_upload_bytes: int
    networks: tuple[Network, ...]
    discard_limit_bytes: int
    session_idle: timedelta
    session_lifetime: timedelta
    mailbox_lockout: LockoutPolicy
    address_lockout: LockoutPolicy
    forwarded_for: bool
    oidc_enabled: bool
    oidc_label: str
    #: Strict-Transport-Security over HTTPS: only with the operator's certificate (MESH_TLS_CERT). Demo mode's own
    #: (broker/tls.py) is for localhost, and a browser told to keep to HTTPS there would keep every other local
    #: server on localhost, on any port, to HTTPS for a year.
    strict_transport: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> UiConfig:
        def lockout(failures: int) -> LockoutPolicy:
            return LockoutPolicy(failures, settings.ui_lockout_base, settings.ui_lockout_max, settings.ui_lockout_quiet)

        return cls(
            # The API's own limit holds for every send: a lower MESH_MAX_REQUEST_BYTES lowers the page's too.
            max_upload_bytes=min(settings.ui_max_upload_bytes, settings.max_request_bytes),
            network_max_upload_bytes=min(settings.ui_network_max_upload_bytes, settings.max_request_bytes),
            networks=ui_networks(settings.ui_network_ranges),
            discard_limit_bytes=settings.ui_discard_limit_bytes,
            session_idle=settings.ui_session_idle,
            session_lifetime=settings.ui_session_lifetime,
            mailbox_lockout=lockout(settings.ui_lockout_failures),
            address_lockout=lockout(settings.ui_lockout_address_failures),
            forwarded_for=settings.ui_forwarded_for,
            oidc_enabled=bool(settings.ui_oidc_issuer),
            oidc_label=settings.ui_oidc_label,
            strict_transport=settings.tls_cert is not None,
        )

    def upload_limit(self, address: str) -> int:
        """The largest file a client at this address may send: more from the health network's ranges."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return self.max_upload_bytes
        if any(ip in network for network in self.networks):
            return self.network_max_upload_bytes
        return self.max_upload_bytes
