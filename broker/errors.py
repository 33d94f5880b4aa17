"""The table of MESH errors: HTTP status, event, code and description, and the exception that carries them."""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: What a 503 for a dependency that is down asks the client to wait (seconds) before it tries again. mesh-client
#: (urllib3's Retry) honours Retry-After on a 503, so its retries of GETs and chunk POSTs are spaced by this.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    event: str
    code: str
    description: str
    #: Sent as a Retry-After header: the condition is temporary and the request may be repeated as it was.
    retry_after: int | None = None


class ErrorCode(enum.Enum):
    """Every error the broker can answer with; the value is what goes on the wire (mesh-api.md section 6)."""

    # Send failures (417 unless stated).
    DATA_FILE_MISSING = ErrorSpec(417, "COLLECT", "02", "Data file is missing or inaccessible.")
    MALFORMED_CONTROL = ErrorSpec(400, "TRANSFER", "06", "MalformedControlFile")
    INVALID_FROM = ErrorSpec(
        417, "SEND", "07", "Invalid From Address, the mailbox does not match the authorization header"
    )
    TO_MISSING = ErrorSpec(400, "SEND", "08", "TO_DTS missing")
    INVALID_MESSAGE_TYPE = ErrorSpec(417, "SEND", "11", "Invalid Message Type for the transfer, should be DATA")
    UNREGISTERED_TO = ErrorSpec(417, "SEND", "12", "Unregistered to address")
    SENDER_NOT_ALLOWED = ErrorSpec(417, "SEND", "16", "Sender is not allowed to send messages of this type")
    WORKFLOW_NOT_REGISTERED = ErrorSpec(417, "SEND", "17", "Workflow ID not registered for mailbox")
    # Code 12 as for any address the workflow cannot deliver to; the description says why.
    PATIENT_ADDRESSING_NOT_ALLOWED = ErrorSpec(
        417, "SEND", "12", "Unregistered to address: GPPROVIDER addressing is not enabled for this workflow"
    )
    # The route of a GPPROVIDER send cannot be resolved now; nothing was stored and the client may retry.
    DEMOGRAPHICS_UNAVAILABLE = ErrorSpec(
        503,
        "SEND",
        "DemographicsUnavailable",
        "The demographics service is unavailable; try again later",
        RETRY_AFTER_SECONDS,
    )
    # Failed GP traces: never an HTTP answer (the send is 202), they become REPORTs in the sender's inbox.
    EPL_MANY_MAILBOXES = ErrorSpec(417, "SEND", "EPL-150", "Too many mailbox matches")
    EPL_NO_MAILBOX = ErrorSpec(417, "SEND", "EPL-151", "No mailbox matched")
    EPL_INVALID_NHS_NUMBER = ErrorSpec(417, "SEND", "EPL-152", "Invalid NHS number")
    EPL_NOT_FOUND = ErrorSpec(417, "SEND", "EPL-153", "NHS number not found")
    EPL_NO_MATCH = ErrorSpec(417, "SEND", "EPL-154", "Supplied NHS number does not match the demographics")
    INVALID_CHECKSUM = ErrorSpec(400, "SEND", "Invalid checksum", "Invalid checksum")
    UNSUPPORTED_ENCODING = ErrorSpec(422, "SEND", "UnsupportedContentEncoding", "Unsupported content encoding")
    INVALID_CHUNKS = ErrorSpec(
        417, "SEND", "InvalidHeaderChunks", "Invalid chunk values sent in mex-Chunk-Range header"
    )
    ENCODING_CHANGED = ErrorSpec(417, "", "", "cannot change content encoding")
    # Checked while the body streams in, so that what is stored can always be decoded for a client that does
    # not accept gzip; nothing is stored.
    INVALID_GZIP = ErrorSpec(
        417, "SEND", "InvalidGzip", "Body is not valid gzip but was sent with Content-Encoding: gzip"
    )
    MESSAGE_TOO_LARGE = ErrorSpec(413, "SEND", "MessageTooLarge", "Request body exceeds the maximum size allowed")
    CHUNK_FINALISED = ErrorSpec(
        423, "SEND", "MessageFinalised", "Messages has been finalised; no more chunks can be uploaded"
    )
    CHUNK_OUT_OF_RANGE = ErrorSpec(
        406, "SEND", "ChunkOutOfRange", "Chunk number is greater than the total number of chunks"
    )
    # Receive side.
    MESSAGE_NOT_FOUND = ErrorSpec(404, "RECEIVE", "20", "Message does not exist")
    MESSAGE_GONE = ErrorSpec(410, "SEND", "Message already accepted", "Message no longer available for download")
    # Bare-string errors: the sandbox sends these with empty event and code.
    FORBIDDEN = ErrorSpec(403, "", "", "Forbidden")
    NOT_FOUND = ErrorSpec(404, "", "", "Not Found")
    MULTIPLE_CHOICES = ErrorSpec(300, "", "", "Multiple Choices")
    BAD_ACCEPT = ErrorSpec(400, "", "", "Accept header api format incorrect")
    ODS_MISSING = ErrorSpec(400, "", "", "ods code missing")
    WORKFLOW_MISSING = ErrorSpec(400, "", "", "workflow id missing")
    # Authentication (always 403).
    AUTH_HEADER_UNREADABLE = ErrorSpec(403, "", "", "Error reading from Authorization header")
    AUTH_MAILBOX_MISMATCH = ErrorSpec(403, "", "", "Mailbox id does not match token")
    AUTH_NO_MAILBOX = ErrorSpec(403, "SEND", "EPL-151", "No mailbox matched")
    AUTH_INVALID_TOKEN = ErrorSpec(403, "", "", "Invalid Authentication Token")
    AUTH_STALE_TOKEN = ErrorSpec(403, "", "", "Authentication token timestamp outside the allowed window")
    AUTH_REPLAYED_TOKEN = ErrorSpec(403, "", "", "Error Duplicated Authentication Token")
    AUTH_INACTIVE_MAILBOX = ErrorSpec(403, "", "", "Request Received from Inactive Mailbox")
    AUTH_CERTIFICATE = ErrorSpec(403, "", "", "Client certificate does not match the mailbox")
    # Sandbox admin endpoints in a mode that forbids them.
    NOT_ALLOWED = ErrorSpec(405, "", "", "Method Not Allowed")
    # A dependency is down or full (docs/production.md, "When a dependency fails"): the request's change was not
    # made (bytes are stored before their row, and a row changes in one transaction), so the cure is to repeat it
    # later. 503 rather than 507 for a full disk too: MESH clients know 503 (mesh-client retries it, honouring
    # Retry-After), and from the client's side the cure is the same.
    STORE_UNAVAILABLE = ErrorSpec(
        503, "", "StoreUnavailable", "The message store is unavailable; try again later", RETRY_AFTER_SECONDS
    )
    BLOB_STORE_UNAVAILABLE = ErrorSpec(
        503, "", "BlobStoreUnavailable", "Message content storage is unavailable; try again later", RETRY_AFTER_SECONDS
    )
    STORAGE_FULL = ErrorSpec(
        503, "", "InsufficientStorage", "Message content storage is full; try again later", RETRY_AFTER_SECONDS
    )
    # Our extension (docs/api.md): an Idempotency-Key the sender already used on a send with other headers.
    IDEMPOTENCY_KEY_REUSED = ErrorSpec(
        409,
        "SEND",
        "IdempotencyKeyReused",
        "Idempotency-Key was already used by this mailbox for a send with different headers",
    )
    # Limits of a node (docs/production.md, "Timeouts and limits"). Nothing was started or stored, so the request
    # may be repeated as it was after Retry-After (the rate limit sends its own wait); mesh-client retries 429 and
    # 503 for every request but the first chunk's POST, whose error its caller sees.
    RATE_LIMITED = ErrorSpec(
        429, "", "TooManyRequests", "Too many requests from this mailbox; try again after Retry-After seconds", 1
    )
    TOO_MANY_TRANSFERS = ErrorSpec(
        429,
        "",
        "TooManyTransfers",
        "Too many uploads and downloads in progress for this mailbox; try again when one has finished",
        1,
    )
    TOO_MANY_CONNECTIONS = ErrorSpec(503, "", "TooManyConnections", "Too many connections; try again later", 1)
    # A body that stopped arriving, or came too slowly: the connection closes and nothing of it is stored.
    REQUEST_TIMEOUT = ErrorSpec(408, "SEND", "RequestTimeout", "The request body did not arrive in time")
    INTERNAL = ErrorSpec(500, "", "", "An internal error occurred.\n\nPlease contact support.")

    @property
    def spec(self) -> ErrorSpec:
        spec: ErrorSpec = self.value
        return spec


class BrokerError(Exception):
    """Raised by services; rendered in v1 or v2 shape by the error middleware only."""

    def __init__(
        self,
        code: ErrorCode,
        *,
        message_id: str | None = None,
        description: str | None = None,
        retry_after: int | None = None,
    ):
        self.code = code
        self.message_id = message_id
        self.description = description or code.spec.description
        #: Seconds for the Retry-After header where this instance knows better than its code (a rate limit's wait).
        self.retry_after = code.spec.retry_after if retry_after is None else retry_after
        super().__init__(self.description)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One entry of a 400 validation body, in the FastAPI shape the sandbox and the live spec use."""

    type: str
    loc: tuple[str, ...]
    msg: str


class ValidationFailed(Exception):
    """A request field is missing or malformed: 400 with {"detail": [{type, loc, msg}]}."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(p.loc)}: {p.msg}" for p in problems))

    @classmethod
    def missing(cls, where: str, name: str) -> ValidationFailed:
        return cls([FieldProblem("missing", (where, name), "Field required")])

    @classmethod
    def too_long(cls, where: str, name: str, limit: int) -> ValidationFailed:
        return cls([FieldProblem("string_too_long", (where, name), f"String should have at most {limit} characters")])

    @classmethod
    def invalid(cls, where: str, name: str, msg: str, type_: str = "value_error") -> ValidationFailed:
        return cls([FieldProblem(type_, (where, name), msg)])
