"""The server's TLS context: HTTPS with TLS >= 1.2, and mutual TLS off, optional or required."""

from __future__ import annotations

import ssl

from broker.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_cert != "off":
        assert settings.tls_client_ca is not None  # Settings validates this pairing
        context.load_verify_locations(cafile=settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if settings.tls_client_cert == "required" else ssl.CERT_OPTIONAL
    return context
