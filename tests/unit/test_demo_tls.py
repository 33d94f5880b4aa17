"""Demo mode's own certificate (broker/tls.py): made once, kept while good, made again when near its end or when
its key does not match; trusted by being given the file."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from broker.settings import Settings
from broker.tls import demo_certificate, demo_certificate_file, demo_context


def test_the_certificate_names_localhost_and_the_loopback_addresses(tmp_path: Path) -> None:
    cert, key = demo_certificate(tmp_path)
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert key.stat().st_mode & 0o777 == 0o600
    # Trusted as its own CA, by a client given the file (mesh-client's verify=, curl's --cacert).
    client = ssl.create_default_context(cafile=str(cert))
    assert client.get_ca_certs()[0]["subject"] == ((("commonName", "localhost"),),)


def test_it_is_kept_while_good_and_made_again_near_its_end(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    cert, _ = demo_certificate(tmp_path, now=now)
    first = cert.read_bytes()
    assert demo_certificate(tmp_path, now=now + timedelta(days=300))[0].read_bytes() == first
    assert demo_certificate(tmp_path, now=now + timedelta(days=364, hours=12))[0].read_bytes() != first


def test_a_key_that_does_not_match_is_replaced(tmp_path: Path) -> None:
    cert, key = demo_certificate(tmp_path)
    other = tmp_path / "other"
    key.write_bytes(demo_certificate(other)[1].read_bytes())  # as a crash between the two writes would leave it
    demo_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)  # raises on a mismatched pair


def test_only_demo_mode_without_a_certificate_of_its_own_gets_a_context(tmp_path: Path) -> None:
    assert demo_context(Settings(data_dir=tmp_path, demo=False)) is None
    own = tmp_path / "own.pem"
    assert demo_context(Settings(data_dir=tmp_path, demo=True, tls_cert=own, tls_key=own)) is None
    assert isinstance(demo_context(Settings(data_dir=tmp_path, demo=True)), ssl.SSLContext)
    assert demo_certificate_file(tmp_path).is_file()
