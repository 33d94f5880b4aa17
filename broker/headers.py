"""The mex-* header names and the parsing of request headers (Accept, mex-Chunk-Range, flags), done once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.models import MessageMeta

# Request headers (aiohttp's CIMultiDict makes look-ups case-insensitive).
TO = "mex-To"
FROM = "mex-From"
WORKFLOW_ID = "mex-WorkflowID"
CHUNK_RANGE = "mex-Chunk-Range"
SUBJECT = "mex-Subject"
LOCAL_ID = "mex-LocalID"
PARTNER_ID = "mex-PartnerID"
FILE_NAME = "mex-FileName"
CONTENT_ENCRYPTED = "mex-Content-Encrypted"
CONTENT_COMPRESSED = "mex-Content-Compressed"
CONTENT_CHECKSUM = "mex-Content-Checksum"
CONTENT_TYPE = "mex-Content-Type"
MESSAGE_TYPE = "mex-MessageType"
CLIENT_VERSION = "mex-ClientVersion"
OS_NAME = "mex-OSName"
OS_VERSION = "mex-OSVersion"
OS_ARCHITECTURE = "mex-OSArchitecture"
JAVA_VERSION = "mex-JavaVersion"
#: Our extension (docs/api.md): a key that makes a repeated first POST of a send answer the first one's message.
IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_KEY_MAX = 255
#: Our extensions, named on the handshake's answer so a client knows this server has them (docs/api.md).
EXTENSIONS = "Mesh-Broker-Extensions"
EXTENSION_NAMES = "idempotency-key, inbox-wait"

#: A handshake without these is a 400 (mesh-api.md section 4.1); mesh-client and the Java client send them.
HANDSHAKE_REQUIRED = (CLIENT_VERSION, OS_NAME, OS_VERSION)

#: Maximum lengths of send headers, as the live spec and the sandbox validate them.
MAX_LENGTHS = {
    TO: 100,
    WORKFLOW_ID: 300,
    CHUNK_RANGE: 20,
    SUBJECT: 500,
    LOCAL_ID: 300,
    PARTNER_ID: 500,
    FILE_NAME: 300,
    CONTENT_CHECKSUM: 100,
    CONTENT_TYPE: 100,
    CONTENT_ENCRYPTED: 20,
    CONTENT_COMPRESSED: 20,
}

V1 = 1
V2 = 2
V1_CONTENT_TYPE = "application/json"
V2_CONTENT_TYPE = "application/vnd.mesh.v2+json"

_MESH_MEDIA = re.compile(r"^application/vnd\.mesh\.v(\d+)\+json$", re.ASCII)
_CHUNK_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
#: The largest chunk number or count taken from a request: what a 32-bit integer column (PostgreSQL's integer)
#: holds, far beyond MESH_MAX_CHUNKS. Bounded when parsed, so no later int(), comparison or SQL bind meets a
#: number of thousands of digits (int() refuses those outright) or one past 2^63.
MAX_CHUNK_NUMBER = 2**31 - 1
_MAX_CHUNK_DIGITS = len(str(MAX_CHUNK_NUMBER))
_TRUE_FLAGS = frozenset({"y", "yes", "t", "true", "on", "1"})


@lru_cache(maxsize=256)
def api_version(accept: str | None) -> int:
    """The API version an Accept header asks for: the first vnd.mesh media range decides, else v1.

    Unlike the sandbox, which splits on ';' only, this splits the list on ',' and drops parameters,
    so `application/vnd.mesh.v2+json, */*;q=0.8` is v2. Cached: clients send the same few values.
    """
    if not accept:
        return V1
    for media_range in accept.split(","):
        media_type = media_range.split(";", 1)[0].strip().lower()
        if "vnd.mesh" not in media_type:
            continue
        match = _MESH_MEDIA.match(media_type)
        if match is None:
            raise BrokerError(ErrorCode.BAD_ACCEPT)
        # Compared as digits: a version of thousands of digits is still just "2 or more", never an int().
        number = match.group(1).lstrip("0")
        return V2 if len(number) > 1 or number >= "2" else V1
    return V1


def parse_flag(value: str | None) -> bool:
    """Sender flags (Y/N and friends): anything unrecognised is false, never an error (as the sandbox)."""
    return value is not None and value.strip().lower() in _TRUE_FLAGS


def parse_chunk_range(value: str | None, *, message_id: str | None = None) -> tuple[int, int]:
    """`x:n` with 1 <= x <= n <= MAX_CHUNK_NUMBER; anything else is 417 InvalidHeaderChunks."""
    match = _CHUNK_RANGE.match(value or "")
    if match is None:
        raise BrokerError(ErrorCode.INVALID_CHUNKS, message_id=message_id)
    number, total = chunk_number(match.group(1)), chunk_number(match.group(2))
    if number is None or total is None or not 1 <= number <= total:
        raise BrokerError(ErrorCode.INVALID_CHUNKS, message_id=message_id)
    return number, total


def chunk_number(digits: str) -> int | None:
    """A chunk number or count from ASCII digits, or None past MAX_CHUNK_NUMBER (however many digits)."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_CHUNK_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    number = int(digits)
    return number if number <= MAX_CHUNK_NUMBER else None


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when Accept-Encoding lists gzip without q=0."""
    if not accept_encoding:
        return False
    for coding in accept_encoding.lower().split(","):
        name, _, params = coding.partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            q = params.replace(" ", "")
            return not (q.startswith("q=0") and q.strip("q=0.") == "")
    return False


_CONTROL_CHARS = re.compile(r"[\x00-\x1f]")
_CHECKSUM_ALLOWED = re.compile(r"^[A-Za-z0-9\s:\-/]*$")
_URL_CHECKED = (TO, WORKFLOW_ID, CONTENT_CHECKSUM)


@dataclass(frozen=True, slots=True)
class SendRequest:
    """The headers of a send (chunk 1), checked in the sandbox's order."""

    recipient: str
    workflow_id: str
    chunk_number: int
    total_chunks: int
    content_encoding: str
    meta: MessageMeta
    declared_from: str | None
    declared_type: str | None
    idempotency_key: str | None = None


def parse_send(headers: Mapping[str, str]) -> SendRequest:
    """Validate send headers; raises ValidationFailed (400) or BrokerError in the sandbox's order."""
    for name in (TO, WORKFLOW_ID):
        if headers.get(name) is None:
            raise ValidationFailed.missing("header", name.lower())
    for name, limit in MAX_LENGTHS.items():
        value = headers.get(name)
        if value is not None and len(value) > limit:
            raise ValidationFailed.too_long("header", name.lower(), limit)
    for name, value in headers.items():
        if name.lower().startswith("mex-") and _CONTROL_CHARS.search(value):
            raise BrokerError(ErrorCode.MALFORMED_CONTROL)
    for name in _URL_CHECKED:
        if (headers.get(name) or "").strip().lower().startswith(("http://", "https://")):
            raise BrokerError(ErrorCode.MALFORMED_CONTROL)
    checksum = headers.get(CONTENT_CHECKSUM, "")
    if not _CHECKSUM_ALLOWED.match(checksum):
        raise BrokerError(ErrorCode.INVALID_CHECKSUM)
    recipient = headers[TO].strip().upper()
    if not recipient:
        raise BrokerError(ErrorCode.TO_MISSING)
    content_encoding = content_encoding_of(headers)
    chunk_range = headers.get(CHUNK_RANGE)
    number, total = (1, 1) if chunk_range is None else parse_chunk_range(chunk_range)
    if number != 1:
        raise BrokerError(ErrorCode.INVALID_CHUNKS)
    content_type = headers.get(CONTENT_TYPE) or headers.get("Content-Type") or ""
    meta = MessageMeta(
        subject=headers.get(SUBJECT, ""),
        local_id=headers.get(LOCAL_ID, ""),
        partner_id=headers.get(PARTNER_ID, ""),
        file_name=headers.get(FILE_NAME, ""),
        content_type=content_type,
        checksum=checksum,
        encrypted=parse_flag(headers.get(CONTENT_ENCRYPTED)),
        compressed=parse_flag(headers.get(CONTENT_COMPRESSED)),
    )
    return SendRequest(
        recipient=recipient,
        workflow_id=headers[WORKFLOW_ID].strip(),
        chunk_number=number,
        total_chunks=total,
        content_encoding=content_encoding,
        meta=meta,
        declared_from=headers.get(FROM),
        declared_type=headers.get(MESSAGE_TYPE),
        idempotency_key=parse_idempotency_key(headers.get(IDEMPOTENCY_KEY)),
    )


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]+$")


def parse_idempotency_key(value: str | None) -> str | None:
    """1 to 255 visible ASCII characters (a UUID is the usual choice), or None when the header is absent."""
    if value is None:
        return None
    if len(value) > IDEMPOTENCY_KEY_MAX:
        raise ValidationFailed.too_long("header", IDEMPOTENCY_KEY.lower(), IDEMPOTENCY_KEY_MAX)
    if not _IDEMPOTENCY_KEY.match(value):
        raise ValidationFailed.invalid(
            "header", IDEMPOTENCY_KEY.lower(), "Idempotency-Key must be 1 to 255 visible ASCII characters"
        )
    return value


#: Request headers, beside the mex-* ones, whose values the broker keeps (Authorization is auth.py's to read).
_TEXT_HEADERS = frozenset({"content-type"})
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,200}$")


def check_text(headers: Mapping[str, str]) -> None:
    """400 MalformedControlFile (code 06, the live service's code for malformed headers) naming the first mex-*
    or Content-Type header whose bytes are not UTF-8.

    aiohttp decodes header bytes with surrogateescape, so such a value arrives as a str holding lone surrogates,
    which every later encode (orjson, the stores, a response header) refuses: refused here, once, instead.
    """
    for name, value in headers.items():
        if value.isascii():
            continue
        lowered = name.lower()
        if not (lowered.startswith("mex-") or lowered in _TEXT_HEADERS):
            continue
        try:
            value.encode()
        except UnicodeEncodeError:
            raise BrokerError(
                ErrorCode.MALFORMED_CONTROL, description=f"MalformedControlFile: {name} is not UTF-8 text"
            ) from None


def request_id(value: str | None) -> str | None:
    """A caller's X-Request-ID when it is printable ASCII of a sane length, else None (the broker makes one):
    it goes into log lines and error bodies, where raw bytes or a huge value do not belong."""
    return value if value is not None and _REQUEST_ID.match(value) else None


def content_encoding_of(headers: Mapping[str, str]) -> str:
    """'' or 'gzip': the only transfer coding MESH allows on uploads (anything else is 422)."""
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in ("", "gzip"):
        raise BrokerError(ErrorCode.UNSUPPORTED_ENCODING)
    return encoding
