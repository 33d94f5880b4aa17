"""The messaging rules: send, chunk upload, delivery, download authorisation, acknowledge, inbox and tracking."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from broker import nhs
from broker.arrivals import Arrivals
from broker.blobs.protocol import BlobStore
from broker.budget import MemoryBudget
from broker.clock import SYSTEM_CLOCK, Clock
from broker.errors import BrokerError, ErrorCode, ValidationFailed
from broker.headers import SendRequest
from broker.ids import decode_cursor, encode_cursor, new_message_id, random_suffix
from broker.integrity import GzipCheck, Meter
from broker.metrics import Metrics
from broker.models import Chunk, Event, Mailbox, Message, MessageType, Party, Status
from broker.services import idempotency
from broker.services.directory import Directory
from broker.services.routing import GpRouting, RouteFailure
from broker.store.protocol import (
    Box,
    ChunkFacts,
    ChunkOutcome,
    ChunkUpload,
    DuplicateMessageId,
    FilterOp,
    IdempotencyKey,
    IdempotencyStore,
    InboxCursor,
    InboxStore,
    MailboxLookup,
    MessageStore,
    WorkflowFilter,
)

if TYPE_CHECKING:
    # Reports builds on blob_key from this module, so it is only named here, never imported at run time.
    from broker.services.reports import Reports

DELIVERED = ("TRANSFER", "00", "Transferred to recipient mailbox")
INBOX_DEFAULT_PAGE = 500
INBOX_PAGE_LIMITS = (10, 5000)
#: Rich lists (mesh-api.md section 4.11): the inbox takes 1..2000; the outbox validates 10..5000, then serves
#: at most 100, as the sandbox does.
RICH_DEFAULT_PAGE = 100
RICH_PAGE_LIMITS = {Box.INBOX: (1, 2000), Box.OUTBOX: (10, 5000)}
RICH_OUTBOX_MOST = 100


@dataclass(frozen=True, slots=True)
class InboxPage:
    message_ids: list[str]
    continue_from: str | None
    approx_count: int | None


#: The recipient recorded on a GPPROVIDER message whose route failed: empty, so no patient detail is kept.
UNROUTED = Party("")


def _unrouted(facts: ChunkFacts) -> bool:
    return facts.status is Status.ERROR and facts.recipient == UNROUTED.mailbox_id


#: A chunk body of at most this many bytes (by its Content-Length) is stored before its message is read, and
#: add_chunk's statement alone decides whether the message takes it: on PostgreSQL the upload is then the token's
#: round trip and add_chunk's, not three. Beyond it the read saves little (a MiB takes longer to arrive than a
#: round trip) and guards much: no one stores a large body for a message it may not write. A refused body costs
#: at most what a send of this size costs anyone (1 MiB is also the ceiling of MESH_INLINE_CHUNK_BYTES).
BODY_FIRST_BYTES = 1024 * 1024


async def _discard(meter: Meter) -> int:
    """Read a body to its end (counting it within the request limit) without keeping it."""
    async for _piece in meter:
        pass
    return meter.size


@dataclass(frozen=True, slots=True)
class RichPage:
    messages: list[Message]
    continue_from: str | None
    valid_at: datetime


def blob_key(message_id: str, chunk_number: int) -> str:
    """Day folder, then message ID, chunk number and a random suffix: re-uploads never overwrite live bytes.

    One folder per day, not per message: a new folder per message cost the file store an extra journal commit
    on every send. The message ID stays a key prefix, so a message's blobs still list together."""
    return f"{message_id[:8]}/{message_id}.{chunk_number}.{random_suffix(8)}"


def parse_workflow_filter(text: str | None) -> WorkflowFilter | None:
    """`WF`, `!WF`, `WF*`, `!WF*`, `*X*`, `!*X*` (2 to 255 characters)."""
    if text is None:
        return None
    if not 2 <= len(text) <= 255:
        raise ValidationFailed.invalid("query", "workflow_filter", "String should have 2 to 255 characters")
    negate = text.startswith("!")
    body = text[1:] if negate else text
    if len(body) >= 2 and body.startswith("*") and body.endswith("*"):
        return WorkflowFilter(FilterOp.CONTAINS, body[1:-1], negate)
    if body.endswith("*"):
        return WorkflowFilter(FilterOp.STARTS_WITH, body[:-1], negate)
    return WorkflowFilter(FilterOp.EQUALS, body, negate)


class MessagingStore(MailboxLookup, MessageStore, InboxStore, IdempotencyStore, Protocol):
    """What the messaging rules read and change."""


class Messaging:
    def __init__(
        self,
        store: MessagingStore,
        blobs: BlobStore,
        directory: Directory,
        *,
        max_request_bytes: int,
        max_message_bytes: int,
        inbox_expiry: timedelta,
        max_chunks: int = 100_000,
        inline_chunk_bytes: int = 0,
        rich_window: timedelta = timedelta(days=30),
        budget: MemoryBudget | None = None,
        metrics: Metrics | None = None,
        clock: Clock = SYSTEM_CLOCK,
        routing: GpRouting | None = None,
        reports: Reports | None = None,
        arrivals: Arrivals | None = None,
    ):
        self._store = store
        self._blobs = blobs
        self._directory = directory
        self._max_request_bytes = max_request_bytes
        self._max_message_bytes = max_message_bytes
        self._max_chunks = max_chunks
        self._inline_chunk_bytes = inline_chunk_bytes
        self._budget = budget or MemoryBudget(256 * 1024 * 1024)
        self._metrics = metrics or Metrics()
        self._inbox_expiry = inbox_expiry
        self._rich_window = rich_window
        self._clock = clock
        self._routing = routing
        self._reports = reports
        self._arrivals = arrivals or Arrivals()

    # Sending ---------------------------------------------------------------------------------------------
    async def send(self, sender: Mailbox, request: SendRequest, body: AsyncIterable[bytes]) -> str:
        """Store chunk 1 and the message row; a single-chunk message is delivered at once. A send with an
        Idempotency-Key its sender used before answers that send's message, storing nothing (docs/api.md)."""
        key = idempotency.key_of(sender, request)
        try:
            recipient = await self._recipient_of(sender, request, body, key)
        except BrokerError:
            # A repeat of a send that was stored is answered as that send whatever has changed since (a recipient
            # deactivated, a workflow restricted). The key is read only here and when the insert finds it taken
            # (_insert), so a first send, the common case, costs no read of it (a round trip on PostgreSQL).
            if key is not None and (held := await self._store.get_send_by_key(key.sender, key.key)) is not None:
                return idempotency.replayed(key, held)
            raise
        if isinstance(recipient, str):
            return recipient  # an unroutable GP address, reported to the sender (_send_unroutable)

        now = self._clock.now()
        message_id = new_message_id(now)
        stored = await self._store_chunk(
            message_id, 1, Meter(_checked(body, request.content_encoding), self._max_request_bytes)
        )
        size = stored.size
        if size == 0:
            raise BrokerError(ErrorCode.DATA_FILE_MISSING)
        complete = request.total_chunks == 1

        def build(message_id: str) -> tuple[Message, Chunk]:
            meta = replace(request.meta, file_name=request.meta.file_name or f"{message_id}.dat")
            message = Message(
                message_id=message_id,
                message_type=MessageType.DATA,
                sender=Party.of(sender),
                recipient=Party.of(recipient),
                workflow_id=request.workflow_id,
                total_chunks=request.total_chunks,
                content_encoding=request.content_encoding,
                meta=meta,
                status=Status.ACCEPTED if complete else Status.UPLOADING,
                created_at=now,
                file_size=size,
                delivered_at=now if complete else None,
                expires_at=now + self._inbox_expiry if complete else None,
                status_at=now,
                events=(Event(Status.ACCEPTED, now, *DELIVERED),) if complete else (Event(Status.UPLOADING, now),),
            )
            return message, replace(stored, message_id=message_id)

        message_id, fresh = await self._insert(message_id, stored, now, build, key)
        if not fresh:
            return message_id
        self._count_stored(stored)
        workflow = self._metrics.workflow(request.workflow_id)
        self._metrics.messages_sent.labels(workflow).inc()
        if complete:
            self._metrics.messages_delivered.labels(workflow).inc()
            self._arrivals.notify(recipient.mailbox_id)
        return message_id

    async def _recipient_of(
        self, sender: Mailbox, request: SendRequest, body: AsyncIterable[bytes], key: IdempotencyKey | None
    ) -> Mailbox | str:
        """The send's checks before any byte is stored, and the mailbox it goes to; or, for a GP address that
        cannot be routed, the ID of the message stored and reported to the sender instead."""
        if request.total_chunks > self._max_chunks:
            raise BrokerError(ErrorCode.INVALID_CHUNKS)
        if request.declared_from is not None and request.declared_from.strip().upper() != sender.mailbox_id:
            raise BrokerError(ErrorCode.INVALID_FROM)
        if request.declared_type is not None and request.declared_type.strip().upper() != "DATA":
            raise BrokerError(ErrorCode.INVALID_MESSAGE_TYPE)
        if self._routing is not None and nhs.is_gp_address(request.recipient):
            # Resolved before any byte is stored: an unavailable directory fails the send (503), storing nothing.
            await self._routing.check_allowed(sender.mailbox_id, request.workflow_id)
            route = await self._routing.resolve(request.recipient, request.workflow_id)
            if isinstance(route, RouteFailure):
                return await self._send_unroutable(sender, request, body, route, key)
            recipient: Mailbox | None = route
        else:
            recipient = await self._store.get_mailbox(request.recipient)
        if recipient is None or not recipient.active:
            raise BrokerError(ErrorCode.UNREGISTERED_TO)
        await self._directory.check_permission(sender.mailbox_id, recipient.mailbox_id, request.workflow_id)
        return recipient

    async def _insert(
        self,
        message_id: str,
        stored: Chunk,
        now: datetime,
        build: Callable[[str], tuple[Message, Chunk]],
        key: IdempotencyKey | None = None,
    ) -> tuple[str, bool]:
        """Store the message build(message_id) describes, whose chunk 1 is stored; an ID that clashes with a
        stored one is drawn again. If it cannot be stored, the chunk's blob (if it has one) is deleted. With a key
        that a racing send (at another node) took first, nothing is stored: (that send's message, False)."""
        for _attempt in range(3):
            try:
                if key is None:
                    await self._store.create_message(*build(message_id))
                    return message_id, True
                held = await self._store.create_message_once(*build(message_id), key)
            except DuplicateMessageId:
                message_id = new_message_id(now)
                continue
            except BaseException:
                await asyncio.shield(self._drop(stored))
                raise
            if held.message_id == message_id:
                return message_id, True
            await self._drop(stored)
            return idempotency.replayed(key, held), False
        await self._drop(stored)
        raise BrokerError(ErrorCode.INTERNAL)

    async def _send_unroutable(
        self,
        sender: Mailbox,
        request: SendRequest,
        body: AsyncIterable[bytes],
        failure: RouteFailure,
        key: IdempotencyKey | None = None,
    ) -> str:
        """Accept a GPPROVIDER send whose trace failed: the message is recorded in error and the sender gets an
        EPL REPORT. Its recipient is an empty party, so no patient detail is kept; its bytes are read and
        dropped, since nothing will ever deliver them."""
        if self._reports is None:
            raise BrokerError(ErrorCode.INTERNAL)
        size = await _discard(Meter(_checked(body, request.content_encoding), self._max_request_bytes))
        if size == 0:
            raise BrokerError(ErrorCode.DATA_FILE_MISSING)
        now = self._clock.now()
        spec = failure.code.spec
        message_id = new_message_id(now)
        dropped = Chunk.inline(message_id, 1, b"")

        def build(message_id: str) -> tuple[Message, Chunk]:
            message = Message(
                message_id=message_id,
                message_type=MessageType.DATA,
                sender=Party.of(sender),
                recipient=UNROUTED,
                workflow_id=request.workflow_id,
                total_chunks=request.total_chunks,
                content_encoding=request.content_encoding,
                meta=replace(request.meta, file_name=request.meta.file_name or f"{message_id}.dat"),
                status=Status.ERROR,
                created_at=now,
                status_at=now,
                events=(Event(Status.ERROR, now, spec.event, spec.code, failure.text),),
            )
            return message, replace(dropped, message_id=message_id)

        message_id, fresh = await self._insert(message_id, dropped, now, build, key)
        if not fresh:
            return message_id
        self._metrics.messages_sent.labels(self._metrics.workflow(request.workflow_id)).inc()
        await self._reports.deliver(
            Party.of(sender),
            Event(Status.ERROR, now, spec.event, spec.code, failure.text, message_id),
            workflow_id=request.workflow_id,
            subject=request.meta.subject,
            local_id=request.meta.local_id,
            file_name=request.meta.file_name or f"{message_id}.dat",
        )
        return message_id

    async def upload_chunk(
        self,
        sender: Mailbox,
        message_id: str,
        number: int,
        content_encoding: str,
        body: AsyncIterable[bytes],
        *,
        total: int,
        length: int | None = None,
    ) -> bool:
        """Store chunk n >= 2 of a message whose chunk 1 declared `total` chunks (mex-Chunk-Range's n); True when
        it was the last missing chunk and the message is now delivered. `length` is the body's Content-Length
        when the request declares one: a small body (BODY_FIRST_BYTES) is stored before its message is read, and
        add_chunk alone decides whether the message takes it; a larger one only once a read of the message says
        it may (docs/architecture.md)."""
        upload = ChunkUpload(sender.mailbox_id, total, content_encoding, self._max_message_bytes)
        checked = _checked(body, content_encoding, message_id)
        if length is not None and length <= BODY_FIRST_BYTES:
            meter = Meter(checked, self._max_request_bytes, message_id)
            try:
                chunk = await self._store_chunk(message_id, number, meter)
                if chunk.size == 0:
                    raise BrokerError(ErrorCode.DATA_FILE_MISSING, message_id=message_id)
            except BrokerError as error:
                # The body's own errors (gzip, an empty or stalled body) come after its message's refusal, and after
                # the message's size limit for the bytes that came before them, as when the message is read first:
                # only on this rare path is it read.
                facts = _admit(message_id, number, upload, await self._facts(message_id, number), chunk_size=meter.size)
                if _unrouted(facts) and error.code is ErrorCode.DATA_FILE_MISSING:
                    return False  # an unrouted message's body is dropped unchecked for emptiness, as below
                raise
        else:
            facts = _admit(message_id, number, upload, await self._facts(message_id, number), chunk_size=None)
            if _unrouted(facts):
                # The sender's client finishes its upload as for any send; the REPORT already told it the outcome.
                await _discard(Meter(checked, self._max_request_bytes, message_id))
                return False
            # The whole message may not outgrow its limit either: its other chunks' bytes and this one's.
            limit = min(self._max_request_bytes, self._max_message_bytes - facts.other_bytes)
            chunk = await self._store_chunk(message_id, number, Meter(checked, limit, message_id))
            if chunk.size == 0:
                raise BrokerError(ErrorCode.DATA_FILE_MISSING, message_id=message_id)
        return await self._add_chunk(chunk, upload)

    async def _add_chunk(self, chunk: Chunk, upload: ChunkUpload) -> bool:
        """Store a received chunk's row (add_chunk, which checks every rule again on the message as it finds it);
        True when it delivered the message. A refused chunk's blob is deleted and the refusal explained from the
        facts add_chunk answers, by the same rule as before the body (_admit)."""
        now = self._clock.now()
        try:
            outcome, facts = await self._store.add_chunk(
                chunk, upload, Event(Status.ACCEPTED, now, *DELIVERED), now + self._inbox_expiry
            )
        except BaseException:
            await asyncio.shield(self._drop(chunk))
            raise
        if outcome in (ChunkOutcome.STORED, ChunkOutcome.COMPLETED):
            self._count_stored(chunk)
        if outcome is ChunkOutcome.STORED:
            return False
        if outcome is ChunkOutcome.COMPLETED:
            if facts is not None:  # always, for a stored chunk
                self._metrics.messages_delivered.labels(self._metrics.workflow(facts.workflow_id)).inc()
                self._arrivals.notify(facts.recipient)
            return True
        await self._drop(chunk)
        if _unrouted(_admit(chunk.message_id, chunk.number, upload, facts, chunk_size=chunk.size)):
            return False  # its body dropped, answered as when the message is read first
        # add_chunk refused what the rule takes: the two disagree, a fault of ours.
        raise BrokerError(ErrorCode.INTERNAL, message_id=chunk.message_id)

    async def _facts(self, message_id: str, number: int) -> ChunkFacts | None:
        """The facts add_chunk would find, read: the message with the chunk n it would replace, in one read."""
        message, replaced = await self._store.get_message_and_chunk(message_id, number)
        return None if message is None else ChunkFacts.of(message, replaced)

    async def _store_chunk(self, message_id: str, number: int, meter: Meter) -> Chunk:
        """Store a chunk's body within the node's transfer memory budget, drawn on a piece at a time (_budgeted): a
        body of at most MESH_INLINE_CHUNK_BYTES is kept to go in the chunk's row (no blob-store round trip, no blob
        to clean up); a larger one streams into the blob store, its first bytes included. An empty body is stored
        inline with size 0, for the caller to refuse."""
        started = time.perf_counter()
        most = min(self._blobs.transfer_buffer_bytes, self._budget.total)
        async with contextlib.aclosing(_budgeted(aiter(meter), self._budget, most)) as pieces:
            head = bytearray()
            async for piece in pieces:
                head += piece
                if len(head) > self._inline_chunk_bytes:
                    key = blob_key(message_id, number)
                    size = await self._blobs.put(key, _prefixed(bytes(head), pieces))
                    chunk = Chunk(message_id, number, key, size, meter.sha256)
                    break
            else:
                chunk = Chunk.inline(message_id, number, bytes(head), meter.sha256)
        self._metrics.chunk_upload_duration.observe(time.perf_counter() - started)
        return chunk

    def _count_stored(self, chunk: Chunk) -> None:
        """Count a chunk once its row is stored: a body stored and then refused (a small chunk that add_chunk
        turned down, a send whose row could not be written) is not a chunk accepted."""
        self._metrics.chunks_stored.labels("blob" if chunk.blob_key else "inline").inc()
        self._metrics.bytes_received.inc(chunk.size)

    async def _drop(self, chunk: Chunk) -> None:
        """Delete the blob of a chunk whose row was not stored; an inline chunk leaves nothing behind."""
        if chunk.blob_key:
            await self._blobs.delete(chunk.blob_key)

    # Receiving -------------------------------------------------------------------------------------------
    async def download(self, recipient: Mailbox, message_id: str, number: int) -> tuple[Message, Chunk]:
        """The message and chunk the recipient may download now, or the MESH error that says why not."""
        message, chunk = await self._store.get_message_and_chunk(message_id, number)
        if message is None:
            raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND, message_id=message_id)
        if message.recipient.mailbox_id != recipient.mailbox_id:
            raise BrokerError(ErrorCode.FORBIDDEN, message_id=message_id)
        if message.status is not Status.ACCEPTED:
            raise BrokerError(ErrorCode.MESSAGE_GONE, message_id=message_id)
        if chunk is None:
            raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND, message_id=message_id)
        return message, chunk

    async def head(self, caller: Mailbox, message_id: str) -> Message:
        """Metadata for the recipient (while downloadable) or the sender (always); strangers get 404."""
        message = await self._store.get_message(message_id)
        if message is None:
            raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND, message_id=message_id)
        if message.recipient.mailbox_id == caller.mailbox_id:
            if message.status is not Status.ACCEPTED:
                raise BrokerError(ErrorCode.MESSAGE_GONE, message_id=message_id)
            return message
        if message.sender.mailbox_id == caller.mailbox_id:
            return message
        raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND, message_id=message_id)

    async def acknowledge(self, recipient: Mailbox, message_id: str) -> None:
        """accepted -> acknowledged; a repeat acknowledge (or one racing it) is a no-op success.

        The store's statement acknowledges only the recipient's accepted message, so the common case is that one
        write; only when it changes nothing is the message read, to tell an unknown message (404) and another
        mailbox's (403) from one no longer accepted (a repeat: success)."""
        acknowledged = Event(Status.ACKNOWLEDGED, self._clock.now())
        workflow_id = await self._store.acknowledge(message_id, recipient.mailbox_id, acknowledged)
        if workflow_id is None:
            message = await self._store.get_message(message_id)
            if message is None:
                raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND, message_id=message_id)
            if message.recipient.mailbox_id != recipient.mailbox_id:
                raise BrokerError(ErrorCode.FORBIDDEN, message_id=message_id)
            if message.status is not Status.ACCEPTED:
                return
            # Delivered (or accepted again) between the statement and the read: acknowledge it now.
            workflow_id = await self._store.acknowledge(message_id, recipient.mailbox_id, acknowledged)
            if workflow_id is None:
                return  # a racing acknowledge took it
        self._metrics.messages_acknowledged.labels(self._metrics.workflow(workflow_id)).inc()

    async def inbox(
        self,
        recipient: Mailbox,
        *,
        max_results: int,
        continue_from: str | None,
        workflow_filter: str | None,
        with_count: bool,
        wait: float = 0.0,
    ) -> InboxPage:
        """A page of the inbox. With wait (our long poll, docs/api.md), an empty page is answered only when a
        message arrives or after wait seconds, whichever comes first."""
        low, high = INBOX_PAGE_LIMITS
        if not low <= max_results <= high:
            raise ValidationFailed.invalid(
                "query", "max_results", f"Input should be between {low} and {high}", "greater_than_equal"
            )
        after = await self._cursor(recipient, continue_from)
        workflow = parse_workflow_filter(workflow_filter)
        if wait > 0:
            ids, cursor = await self._wait_for_mail(recipient.mailbox_id, max_results, after, workflow, wait)
        else:
            ids, cursor = await self._store.list_inbox(recipient.mailbox_id, max_results, after, workflow)
        count = await self._store.count_inbox(recipient.mailbox_id) if with_count else None
        return InboxPage(ids, None if cursor is None else encode_cursor(cursor), count)

    async def _wait_for_mail(
        self, mailbox_id: str, limit: int, after: InboxCursor | None, workflow: WorkflowFilter | None, wait: float
    ) -> tuple[list[str], InboxCursor | None]:
        """List until the page has something or wait seconds pass. Between looks it sleeps until the mailbox is
        notified, or for the arrivals' poll interval where not every arrival is heard (SQLite, or PostgreSQL
        while its listener is down)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            arrival = self._arrivals.expect(mailbox_id)
            try:
                ids, cursor = await self._store.list_inbox(mailbox_id, limit, after, workflow)
                remaining = deadline - loop.time()
                if ids or remaining <= 0 or self._arrivals.closed:
                    return ids, cursor
                poll = self._arrivals.poll_seconds
                await self._arrivals.wait(arrival, remaining if poll is None else min(remaining, poll))
            finally:
                self._arrivals.forget(mailbox_id, arrival)

    async def rich(
        self,
        mailbox: Mailbox,
        box: Box,
        *,
        start_time: str | None,
        max_results: int,
        continue_from: str | None,
    ) -> RichPage:
        """The rich inbox or outbox: every status, newest first, created since start_time (by default, the
        rich window: as far back as messages are kept)."""
        low, high = RICH_PAGE_LIMITS[box]
        if not low <= max_results <= high:
            raise ValidationFailed.invalid(
                "query", "max_results", f"Input should be between {low} and {high}", "greater_than_equal"
            )
        if box is Box.OUTBOX:
            max_results = min(max_results, RICH_OUTBOX_MOST)
        now = self._clock.now()
        since = now - self._rich_window if start_time is None else _parse_time(start_time)
        after = None
        if continue_from is not None:
            after = decode_cursor(continue_from)
            if after is None:
                raise ValidationFailed.invalid("query", "continue_from", "Unknown continuation token")
        messages, cursor = await self._store.list_messages(mailbox.mailbox_id, box, since, max_results, after)
        return RichPage(messages, None if cursor is None else encode_cursor(cursor), now)

    async def _cursor(self, recipient: Mailbox, continue_from: str | None) -> InboxCursor | None:
        if continue_from is None:
            return None
        if not 24 <= len(continue_from) <= 1000:
            raise ValidationFailed.invalid("query", "continue_from", "String should have 24 to 1000 characters")
        cursor = decode_cursor(continue_from)
        if cursor is None:
            # v1 clients continue from the last message ID they were given.
            cursor = await self._store.inbox_cursor(recipient.mailbox_id, continue_from.upper())
        if cursor is None:
            raise ValidationFailed.invalid("query", "continue_from", "Unknown continuation token")
        return cursor

    async def count(self, recipient: Mailbox) -> int:
        return await self._store.count_inbox(recipient.mailbox_id)

    # Tracking --------------------------------------------------------------------------------------------
    async def track(self, sender: Mailbox, message_id: str) -> Message:
        """Only the sender tracks; anyone else is told 404, as the live service does."""
        message = await self._store.get_message(message_id)
        if message is None or message.sender.mailbox_id != sender.mailbox_id:
            raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND, message_id=message_id)
        return message

    async def track_local_id(self, sender: Mailbox, local_id: str) -> Message:
        found = await self._store.find_by_local_id(sender.mailbox_id, local_id, limit=2)
        if not found:
            raise BrokerError(ErrorCode.MESSAGE_NOT_FOUND)
        if len(found) > 1:
            raise BrokerError(ErrorCode.MULTIPLE_CHOICES)
        return found[0]


def _checked(body: AsyncIterable[bytes], content_encoding: str, message_id: str | None = None) -> AsyncIterable[bytes]:
    """The body, checked while it streams to be whole gzip where it is declared gzip (417 InvalidGzip if not), so
    that every stored gzip chunk can be decoded for a client that does not accept gzip."""
    return GzipCheck(body, message_id) if content_encoding == "gzip" else body


def _admit(
    message_id: str, number: int, upload: ChunkUpload, facts: ChunkFacts | None, chunk_size: int | None
) -> ChunkFacts:
    """The message's facts when it takes chunk n (an unrouted message takes it to drop it); else why not, raised.
    The one rule of a chunk upload, in the order its errors are answered: applied to the message read before the
    body (chunk_size None: the size is then bounded while the body streams) and to the facts add_chunk answers
    when it refuses, whose statement checks the same rules."""
    if facts is None:
        raise BrokerError(ErrorCode.NOT_FOUND, message_id=message_id)
    if (refused := _refusal(message_id, number, upload, facts, chunk_size)) is not None:
        raise refused
    return facts


def _refusal(
    message_id: str, number: int, upload: ChunkUpload, facts: ChunkFacts, chunk_size: int | None
) -> BrokerError | None:
    if facts.sender != upload.sender:
        return BrokerError(ErrorCode.FORBIDDEN, message_id=message_id)
    if _unrouted(facts):
        if number > facts.total_chunks:
            return BrokerError(ErrorCode.CHUNK_OUT_OF_RANGE, message_id=message_id)
        return _total_refusal(message_id, facts, upload)
    if facts.status is not Status.UPLOADING:
        return BrokerError(ErrorCode.CHUNK_FINALISED, message_id=message_id)
    if number > facts.total_chunks or facts.message_type is not MessageType.DATA:
        return BrokerError(ErrorCode.CHUNK_OUT_OF_RANGE, message_id=message_id)
    if (refused := _total_refusal(message_id, facts, upload)) is not None:
        return refused
    if upload.content_encoding != facts.content_encoding:
        return BrokerError(ErrorCode.ENCODING_CHANGED, message_id=message_id)
    if chunk_size is not None and facts.other_bytes + chunk_size > upload.max_message_bytes:
        return BrokerError(ErrorCode.MESSAGE_TOO_LARGE, message_id=message_id)
    return None


def _total_refusal(message_id: str, facts: ChunkFacts, upload: ChunkUpload) -> BrokerError | None:
    """A later chunk's mex-Chunk-Range must declare the total chunk 1 declared (417 InvalidHeaderChunks)."""
    if upload.total_chunks == facts.total_chunks:
        return None
    return BrokerError(
        ErrorCode.INVALID_CHUNKS,
        message_id=message_id,
        description=f"Invalid chunk values sent in mex-Chunk-Range header: the message has "
        f"{facts.total_chunks} chunks, not {upload.total_chunks}",
    )


async def _budgeted(pieces: AsyncIterator[bytes], budget: MemoryBudget, most: int) -> AsyncGenerator[bytes, None]:
    """A body's pieces, each holding budget from its arrival until the store asks for the next one: as much as the
    store may be holding by then (every byte handed over so far, up to its write buffer, `most`). Nothing is held
    between pieces, while the client is waited on, so stalled uploads cannot starve the node of budget; and none
    is held while waiting for budget, so uploads cannot deadlock each holding part of it."""
    handed = 0
    async for piece in pieces:
        handed += len(piece)
        async with budget.reserve(min(handed, most)):
            yield piece


async def _prefixed(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The bytes already read, then the rest of the body."""
    yield head
    async for piece in rest:
        yield piece


def _parse_time(text: str) -> datetime:
    """ISO-8601; a time without a zone is UTC, as the broker's own v2 timestamps are."""
    try:
        at = datetime.fromisoformat(text)
        # A zone offset can carry a time just inside datetime's range (year 1 or 9999) out of it as UTC.
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailed.invalid(
            "query", "start_time", "Input should be a valid datetime", "datetime_parsing"
        ) from None
