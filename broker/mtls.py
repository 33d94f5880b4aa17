"""Which client certificate may act for which mailbox: mutual TLS's binding of a certificate's CN to a mailbox."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from broker.errors import BrokerError, ErrorCode
from broker.models import Mailbox
from broker.settings import LIVE_CN_SUFFIX, Settings

#: One DNS label of a `<local id>.<ODS>.<suffix>` CN; a wildcard or an empty label names nobody.
_LOCAL_ID = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class CertificateBinding:
    """The CN rule for one node: `off` ignores client certificates; `optional` binds one when it is sent;
    `required` refuses a request without one.

    A certificate acts for a mailbox when its CN is, compared case-insensitively and whole, the mailbox ID or
    `<MAILBOX>.<ODS>.<suffix>` with the mailbox's own ODS code (the live service's convention). With `ods_wide`,
    `<local id>.<ODS>.<suffix>` acts for every mailbox of that ODS code too: the spec's other convention, which
    lets one certificate speak for a whole organisation, hence off unless asked for.
    """

    mode: str = "off"
    suffix: str = LIVE_CN_SUFFIX
    ods_wide: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CertificateBinding:
        return cls(settings.tls_client_cert, settings.tls_client_cn_suffix, settings.tls_client_cn_ods_wide)

    def check(self, peer_cert: dict[str, Any] | None, mailbox: Mailbox) -> None:
        """BrokerError(403) unless the connection's certificate (None: none was sent) may act for mailbox."""
        if self.mode == "off":
            return
        if peer_cert is None:
            if self.mode == "required":
                raise BrokerError(ErrorCode.AUTH_CERTIFICATE)
            return
        if not self.matches(common_name(peer_cert), mailbox):
            raise BrokerError(ErrorCode.AUTH_CERTIFICATE)

    def matches(self, cn: str | None, mailbox: Mailbox) -> bool:
        if not cn:
            return False
        cn = cn.casefold()
        mailbox_id = mailbox.mailbox_id.casefold()
        if cn == mailbox_id:
            return True
        ods_code = mailbox.ods_code.casefold()
        if not ods_code:
            return False
        organisation = f".{ods_code}.{self.suffix.casefold()}"
        if cn == mailbox_id + organisation:
            return True
        if not self.ods_wide or not cn.endswith(organisation):
            return False
        return _LOCAL_ID.fullmatch(cn.removesuffix(organisation)) is not None


def common_name(peer_cert: dict[str, Any] | None) -> str | None:
    """The subject CN of a peer certificate as ssl.SSLObject.getpeercert() returns it."""
    if not peer_cert:
        return None
    for rdn in peer_cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
