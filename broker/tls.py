"""The server's TLS context: HTTPS with TLS >= 1.2, and mutual TLS off, optional or required; in demo mode, TLS
with a certificate of its own beside plain HTTP."""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

from broker.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = _context(settings.tls_cert, settings.tls_key)
    if settings.tls_client_cert != "off":
        assert settings.tls_client_ca is not None  # Settings validates this pairing
        context.load_verify_locations(cafile=settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if settings.tls_client_cert == "required" else ssl.CERT_OPTIONAL
    return context


def _context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


#: Where demo mode keeps the certificate it made for itself, under MESH_DATA_DIR, and its files' names there.
DEMO_TLS_FOLDER = "demo-tls"
DEMO_CERT_NAME, DEMO_KEY_NAME = "cert.pem", "key.pem"
#: How long the demo certificate is good for; a new one is made once it has less than a day left.
DEMO_CERTIFICATE_DAYS = 365


def demo_context(settings: Settings) -> ssl.SSLContext | None:
    """In demo mode without MESH_TLS_CERT, a TLS context with a self-signed certificate for localhost, 127.0.0.1 and
    ::1, spoken beside plain HTTP on the one port (broker/gate.py): the sandbox image and the JavaScript client use
    `https://localhost:8700`, the README `http://127.0.0.1:8700`. None otherwise."""
    if not settings.demo or settings.tls_cert is not None:
        return None
    return _context(*demo_certificate(settings.data_dir / DEMO_TLS_FOLDER))


def demo_certificate_file(data_dir: Path) -> Path:
    """The demo certificate a client is given to trust (demo_context makes it at the broker's start)."""
    return data_dir / DEMO_TLS_FOLDER / DEMO_CERT_NAME


def demo_certificate(folder: Path, *, now: datetime | None = None) -> tuple[Path, Path]:
    """(certificate, key) PEM files in folder: the ones made before while they have a day left, else new ones.
    The certificate is its own CA, so a client trusts it by being given the file (verify=, NODE_EXTRA_CA_CERTS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = now or datetime.now(UTC)
    cert_path, key_path = folder / DEMO_CERT_NAME, folder / DEMO_KEY_NAME
    if cert_path.exists() and key_path.exists():
        try:
            existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
            existing_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        except ValueError:
            pass  # unreadable (cut short by a crash?): made again
        else:
            public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            pair = existing.public_key().public_bytes(*public) == existing_key.public_key().public_bytes(*public)
            if pair and existing.not_valid_after_utc - now > timedelta(days=1):
                return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    names = [x509.DNSName("localhost"), x509.IPAddress(ip_address("127.0.0.1")), x509.IPAddress(ip_address("::1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=DEMO_CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key readable by the broker's user alone. A crash between the two writes leaves a pair that does not
    # match, which the next start sees and replaces.
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
