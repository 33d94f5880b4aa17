"""broker/headers.py: Accept negotiation, chunk ranges, flags, Accept-Encoding and the send-header check order."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from broker import headers
from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.models import MessageMeta


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (None, 1),
        ("", 1),
        ("application/json", 1),
        ("*/*", 1),
        ("text/html, application/json;q=0.9", 1),
        ("application/vnd.mesh.v1+json", 1),
        ("application/vnd.mesh.v2+json", 2),
        ("application/vnd.mesh.v3+json", 2),
        ("application/vnd.mesh.v10+json", 2),
        ("APPLICATION/VND.MESH.V2+JSON", 2),
        ("application/vnd.mesh.v2+json;q=0.9", 2),
        ("application/vnd.mesh.v2+json; q=1.0; charset=utf-8", 2),
        ("application/vnd.mesh.v2+json, */*", 2),
        ("*/*;q=0.8, application/vnd.mesh.v2+json", 2),
        ("application/json, application/vnd.mesh.v2+json", 2),
        ("application/vnd.mesh.v1+json, application/vnd.mesh.v2+json", 1),
        ("  application/vnd.mesh.v2+json  ", 2),
    ],
)
def test_api_version(accept: str | None, version: int) -> None:
    assert headers.api_version(accept) == version


@pytest.mark.parametrize(
    "accept",
    [
        "application/vnd.mesh.v2+xml",
        "application/vnd.mesh.vX+json",
        "application/vnd.mesh+json",
        "application/vnd.mesh.v2+json-extra",
        "text/vnd.mesh.v2+json",
        "*/*, application/vnd.mesh.latest+json",
    ],
)
def test_api_version_rejects_a_malformed_mesh_media_type(accept: str) -> None:
    with pytest.raises(BrokerError) as raised:
        headers.api_version(accept)
    assert raised.value.code is ErrorCode.BAD_ACCEPT
    assert raised.value.code.spec.status == 400
    # Not cached as a success: asking again fails again.
    with pytest.raises(BrokerError):
        headers.api_version(accept)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1:1", (1, 1)), ("1:5", (1, 5)), ("5:5", (5, 5)), (" 2 : 3 ", (2, 3)), ("007:10", (7, 10))],
)
def test_parse_chunk_range(value: str, expected: tuple[int, int]) -> None:
    assert headers.parse_chunk_range(value) == expected


@pytest.mark.parametrize("value", [None, "", "1", "0:1", "3:2", "1:0", "a:b", "1:2:3", "-1:2", "1;2", "1.0:2"])
def test_parse_chunk_range_rejects(value: str | None) -> None:
    with pytest.raises(BrokerError) as raised:
        headers.parse_chunk_range(value, message_id="MID")
    assert raised.value.code is ErrorCode.INVALID_CHUNKS
    assert raised.value.message_id == "MID"


@pytest.mark.parametrize("value", ["y", "Y", "yes", "YES", "t", "T", "true", "True", "on", "ON", "1", " y "])
def test_parse_flag_true(value: str) -> None:
    assert headers.parse_flag(value) is True


@pytest.mark.parametrize("value", [None, "", "n", "N", "no", "false", "off", "0", "2", "N/A", "yess", "true!", "ye"])
def test_parse_flag_false(value: str | None) -> None:
    assert headers.parse_flag(value) is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("*", True),
        ("deflate, gzip", True),
        ("gzip, deflate, br", True),
        ("gzip;q=1.0", True),
        ("gzip;q=0.5", True),
        ("gzip;q=0.001", True),
        ("gzip;q=0", False),
        ("gzip; q=0", False),
        ("gzip;q=0.0", False),
        ("gzip;q=0.000", False),
        ("deflate, gzip;q=0", False),
        ("*;q=0", False),
        ("identity", False),
        ("deflate, br", False),
    ],
)
def test_accepts_gzip(value: str | None, expected: bool) -> None:
    assert headers.accepts_gzip(value) is expected


# parse_send ---------------------------------------------------------------------------------------------------


def send_headers(**values: str) -> CIMultiDict[str]:
    base = {"mex-To": "x26abc2", "mex-WorkflowID": "TEST_WORKFLOW"}
    base.update({k.replace("_", "-"): v for k, v in values.items()})
    return CIMultiDict({k: v for k, v in base.items() if v is not None})


def test_parse_send_happy_path() -> None:
    request = headers.parse_send(
        CIMultiDict(
            {
                "MEX-TO": "  x26abc2 ",
                "mex-workflowid": " test TEST ",
                "mex-Chunk-Range": "1:3",
                "mex-Subject": "subject",
                "mex-LocalID": "local#1",
                "mex-PartnerID": "partner",
                "mex-FileName": "file.dat",
                "mex-Content-Type": "text/csv",
                "Content-Type": "application/octet-stream",
                "mex-Content-Checksum": "sha256:abc-123/x",
                "mex-Content-Encrypted": "Y",
                "mex-Content-Compressed": "N/A",
                "Content-Encoding": "GZIP",
                "mex-From": "X26ABC1",
                "mex-MessageType": "DATA",
            }
        )
    )
    assert request == headers.SendRequest(
        recipient="X26ABC2",
        workflow_id="test TEST",
        chunk_number=1,
        total_chunks=3,
        content_encoding="gzip",
        meta=MessageMeta(
            subject="subject",
            local_id="local#1",
            partner_id="partner",
            file_name="file.dat",
            content_type="text/csv",
            checksum="sha256:abc-123/x",
            encrypted=True,
            compressed=False,
        ),
        declared_from="X26ABC1",
        declared_type="DATA",
    )


def test_parse_send_defaults() -> None:
    request = headers.parse_send(send_headers(**{"Content-Type": "text/plain"}))
    assert (request.chunk_number, request.total_chunks) == (1, 1)
    assert request.content_encoding == ""
    assert request.meta == MessageMeta(content_type="text/plain")
    assert request.declared_from is None and request.declared_type is None


def _outcome(hdrs: CIMultiDict[str]) -> str:
    try:
        headers.parse_send(hdrs)
    except ValidationFailed as exc:
        return f"400 {exc.problems[0].type} {exc.problems[0].loc[1]}"
    except BrokerError as exc:
        return exc.code.name
    return "ok"


LONG_SUBJECT = "s" * 501
BAD_CHECKSUM = "`#!@"


# Each case fails two checks at once; the first in mesh-api.md section 4.2's table must win.
@pytest.mark.parametrize(
    ("hdrs", "expected"),
    [
        (send_headers(**{"mex-To": None}), "400 missing mex-to"),
        (send_headers(**{"mex-WorkflowID": None}), "400 missing mex-workflowid"),
        (send_headers(**{"mex-To": None, "mex-Subject": LONG_SUBJECT}), "400 missing mex-to"),
        (send_headers(**{"mex-WorkflowID": None, "mex-Subject": "a\x01b"}), "400 missing mex-workflowid"),
        (send_headers(**{"mex-Subject": LONG_SUBJECT, "mex-LocalID": "a\nb"}), "400 string_too_long mex-subject"),
        (send_headers(**{"mex-To": "A" * 101}), "400 string_too_long mex-to"),
        (send_headers(**{"mex-Subject": "a\tb", "mex-Content-Checksum": BAD_CHECKSUM}), "MALFORMED_CONTROL"),
        (send_headers(**{"mex-To": "https://evil", "mex-Content-Checksum": BAD_CHECKSUM}), "MALFORMED_CONTROL"),
        (send_headers(**{"mex-WorkflowID": "HTTP://x"}), "MALFORMED_CONTROL"),
        (send_headers(**{"mex-Content-Checksum": "http://x"}), "MALFORMED_CONTROL"),
        (send_headers(**{"mex-Content-Checksum": BAD_CHECKSUM, "mex-To": "  "}), "INVALID_CHECKSUM"),
        (send_headers(**{"mex-To": "  ", "Content-Encoding": "br"}), "TO_MISSING"),
        (send_headers(**{"mex-To": ""}), "TO_MISSING"),
        (send_headers(**{"Content-Encoding": "br", "mex-Chunk-Range": "bad"}), "UNSUPPORTED_ENCODING"),
        (send_headers(**{"mex-Chunk-Range": "bad"}), "INVALID_CHUNKS"),
        (send_headers(**{"mex-Chunk-Range": "2:3"}), "INVALID_CHUNKS"),
        (send_headers(**{"mex-Chunk-Range": "0:3"}), "INVALID_CHUNKS"),
    ],
)
def test_parse_send_check_order(hdrs: CIMultiDict[str], expected: str) -> None:
    assert _outcome(hdrs) == expected


def test_parse_send_control_chars_only_matter_in_mex_headers() -> None:
    assert _outcome(send_headers(**{"User-Agent": "a\x01b"})) == "ok"


@pytest.mark.parametrize("checksum", ["b10a8db164e0754105b7a99be72e3fe5", "sha256:abc", "md5:abc", "a b", "x-y/z", ""])
def test_parse_send_accepts_sandbox_checksums(checksum: str) -> None:
    assert headers.parse_send(send_headers(**{"mex-Content-Checksum": checksum})).meta.checksum == checksum


def test_content_encoding_of() -> None:
    assert headers.content_encoding_of(CIMultiDict()) == ""
    assert headers.content_encoding_of(CIMultiDict({"content-encoding": " Gzip "})) == "gzip"
    with pytest.raises(BrokerError) as raised:
        headers.content_encoding_of(CIMultiDict({"Content-Encoding": "deflate"}))
    assert raised.value.code is ErrorCode.UNSUPPORTED_ENCODING
