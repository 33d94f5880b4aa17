"""An async MESH client (aiohttp) for any MESH server: ours, mesh-sandbox or the live service.

NHSMESH auth, TLS and mutual TLS, handshake; sends from bytes, a file or an async iterator, cut into chunks
(gzip per chunk optional) and streamed from disk, so no chunk is ever held whole in memory; downloads streamed to a
file with each chunk's SHA-256 checked where the server gives one (`Content-Digest`); acknowledge, track, lookup,
workflow search and the inbox over v2 paging. Requests are retried as the official client retries them (425, 429,
502, 503, 504 and connection errors, backoff 0.5 s doubling, Retry-After honoured), except the first POST of a send:
that one only against a server that honours our Idempotency-Key (it names the extension on the handshake),
because elsewhere a retried first POST can deliver twice.

Chunked transfers resume after a crash from the client's own journal (broker/client/journal.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import math
import os
import platform
import ssl
import tempfile
import uuid
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

import aiohttp

from broker import auth
from broker.client.journal import DownloadJournal, UploadJournal

V2 = "application/vnd.mesh.v2+json"
#: The API's ceiling per request (mesh-api.md section 8): a chunk, compressed or not, must stay under it.
MAX_CHUNK_BYTES = 100 * 1000 * 1000
#: The official Python client's default chunk size.
DEFAULT_CHUNK_BYTES = 75 * 1024 * 1024
#: Bytes read from disk or the network per step: what one transfer holds in memory.
PIECE = 256 * 1024
#: A download's written bytes are sent on to the disk every this many (see _Writeback).
WRITEBACK_BYTES = 32 * 1024 * 1024
RETRY_STATUSES = frozenset({425, 429, 502, 503, 504})
#: Our broker's answer to a chunk of a message whose every chunk is in (broker/errors.py CHUNK_FINALISED).
FINALISED_STATUS, FINALISED_CODE = 423, "MessageFinalised"
#: Compression favours speed: the point is fewer bytes on the wire, not the smallest file.
GZIP_LEVEL = 6
#: What our broker names on the handshake (broker/headers.py EXTENSIONS).
EXTENSIONS_HEADER = "Mesh-Broker-Extensions"
IDEMPOTENCY = "idempotency-key"
INBOX_WAIT = "inbox-wait"

Progress = Callable[[int], None]
Source = bytes | Path | AsyncIterable[bytes]


class MeshError(Exception):
    """The server refused (a MESH error body), or the request failed after its retries (status 0)."""

    def __init__(self, status: int, description: str, *, event: str = "", code: str = "", message_id: str = ""):
        self.status = status
        self.event = event
        self.code = code
        self.description = description
        self.message_id = message_id
        where = f" {event}/{code}" if code else ""
        super().__init__(f"{status}{where}: {description}" if status else description)


class IntegrityError(MeshError):
    """A downloaded chunk's bytes do not match the SHA-256 the server gave for them."""


@dataclass(frozen=True)
class Credentials:
    """Where and who: the server's base URL (without /messageexchange) and the mailbox's secrets."""

    url: str
    mailbox: str
    password: str
    shared_key: bytes
    #: CA bundle the server's certificate must chain to (None: the system's).
    ca: Path | None = None
    #: Client certificate and key for mutual TLS.
    cert: Path | None = None
    key: Path | None = None
    check_hostname: bool = True


@dataclass(frozen=True)
class ReceivedMessage:
    """A downloaded message: its ID, its mex-* headers (names lower-case, without `mex-`) and its size on disk."""

    message_id: str
    headers: dict[str, str]
    size: int
    chunks: int

    @property
    def is_report(self) -> bool:
        return self.headers.get("messagetype", "DATA").upper() == "REPORT"


@dataclass(frozen=True)
class Sized:
    """A file's size and, when it is one piece (at most PIECE bytes), its bytes: what a send looks up first, learnt
    ahead by a caller that was in a thread touching the file anyway (the folder agent, in its batch of moves), so
    the send need not make a thread hop of its own to look again (see look())."""

    size: int
    content: bytes | None


def look(path: Path) -> Sized:
    """A file's Sized (blocking: call it from a thread). FileNotFoundError if it is not there."""
    size, content = _size_and_bytes(path, PIECE)
    return Sized(size, content)


@dataclass
class InboxPage:
    message_ids: list[str]
    next_link: str | None
    approx_count: int | None


@dataclass
class _Tokens:
    """One nonce per client and a count that grows with every request, as mesh-client does."""

    creds: Credentials
    nonce: str = field(default_factory=lambda: str(uuid.uuid4()))
    count: int = 0

    def __call__(self) -> str:
        token = auth.make_token(
            self.creds.shared_key,
            self.creds.mailbox,
            self.creds.password,
            nonce=self.nonce,
            nonce_count=self.count,
            at=datetime.now(UTC),
        )
        self.count += 1
        return token


def ssl_context(creds: Credentials) -> ssl.SSLContext | None:
    if not creds.url.startswith("https://"):
        return None
    context = ssl.create_default_context(cafile=str(creds.ca) if creds.ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = creds.check_hostname
    if creds.cert is not None:
        context.load_cert_chain(str(creds.cert), str(creds.key) if creds.key else None)
    return context


class MeshClient:
    """One mailbox's connection to a MESH server. Use as `async with MeshClient(creds) as mesh:`."""

    def __init__(
        self,
        creds: Credentials,
        *,
        chunk_size: int = DEFAULT_CHUNK_BYTES,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 600.0,
        application: str = "mesh-broker-client",
        accept_gzip: bool = False,
        connections: int = 16,
    ):
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be between 1 and {MAX_CHUNK_BYTES} bytes (the API's limit)")
        self.creds = Credentials(**{**creds.__dict__, "url": creds.url.rstrip("/"), "mailbox": creds.mailbox.upper()})
        self.chunk_size = chunk_size
        self._retries = retries
        self._backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=timeout)
        self._application = application
        self._accept_gzip = accept_gzip
        self._connections = connections
        self._tokens = _Tokens(self.creds)
        self._session: aiohttp.ClientSession | None = None
        #: Our broker's extensions, learnt from the handshake (empty for any other server).
        self.extensions: frozenset[str] = frozenset()

    async def __aenter__(self) -> MeshClient:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=ssl_context(self.creds) or False, limit=self._connections)
            # Bodies arrive as the server sent them: gzip is undone here, chunk by chunk, after its digest check.
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False, trust_env=False
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def base(self) -> str:
        return f"{self.creds.url}/messageexchange/{quote(self.creds.mailbox)}"

    # Requests --------------------------------------------------------------------------------------------
    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "Authorization": self._tokens(),
            "Accept": V2,
            "Accept-Encoding": "gzip" if self._accept_gzip else "identity",
            "User-Agent": f"{self._application};mesh_broker;{platform.machine()};{platform.system()}",
        }
        headers.update(extra or {})
        return headers

    async def _request(
        self,
        method: str,
        url: str,
        *,
        extra: dict[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        retry: bool = True,
        ok: tuple[int, ...] = (200, 202, 206),
    ) -> aiohttp.ClientResponse:
        """A response with an ok status (the caller reads and releases it), else MeshError. body() makes a fresh
        body for each try (a stream cannot be replayed)."""
        if self._session is None:
            await self.open()
        assert self._session is not None
        attempt = 0
        while True:
            delay = self._backoff * (2**attempt)
            try:
                response = await self._session.request(
                    method, url, headers=self._headers(extra), data=None if body is None else body()
                )
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                if not retry or attempt >= self._retries:
                    raise MeshError(0, f"{method} {url} failed: {exc or type(exc).__name__}") from exc
            else:
                if response.status in ok:
                    return response
                if not (retry and response.status in RETRY_STATUSES and attempt < self._retries):
                    raise await _error(response)
                delay = max(delay, _retry_after(response))
                response.release()
            attempt += 1
            await asyncio.sleep(delay)

    async def _json(self, method: str, url: str, **kw: Any) -> Any:
        response = await self._request(method, url, **kw)
        async with response:
            if not (await response.read()):
                return None
            return await response.json(content_type=None)

    # Handshake, lookup, tracking -------------------------------------------------------------------------
    async def handshake(self) -> frozenset[str]:
        """Validate the mailbox (the spec asks for one a day) and learn the server's extensions of ours."""
        extra = {
            "mex-ClientVersion": f"{self._application}==1",
            "mex-OSName": platform.system() or "Linux",
            "mex-OSVersion": platform.release() or "unknown",
            "mex-OSArchitecture": platform.machine() or "unknown",
            "mex-JavaVersion": "N/A",
        }
        response = await self._request("POST", self.base, extra=extra)
        async with response:
            await response.read()
            named = response.headers.get(EXTENSIONS_HEADER, "")
        self.extensions = frozenset(name.strip().lower() for name in named.split(",") if name.strip())
        return self.extensions

    async def lookup(self, ods_code: str, workflow_id: str) -> list[dict[str, str]]:
        url = f"{self.creds.url}/messageexchange/endpointlookup/{quote(ods_code)}/{quote(workflow_id)}"
        return list((await self._json("GET", url))["results"])

    async def workflow_search(self, workflow_id: str) -> list[dict[str, str]]:
        url = f"{self.creds.url}/messageexchange/workflowsearch/{quote(workflow_id)}"
        return list((await self._json("GET", url))["results"])

    async def track(self, message_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._json(
            "GET", f"{self.base}/outbox/tracking?{urlencode({'messageID': message_id})}"
        )
        return body

    async def acknowledge(self, message_id: str) -> None:
        await self._json("PUT", f"{self.base}/inbox/{quote(message_id)}/status/acknowledged")

    # Inbox -----------------------------------------------------------------------------------------------
    async def inbox(
        self,
        *,
        max_results: int | None = None,
        workflow_filter: str | None = None,
        wait: int | None = None,
        next_link: str | None = None,
    ) -> InboxPage:
        """One page of message IDs. wait (seconds) uses our long poll where the server has it (learnt from the
        handshake); elsewhere it is not sent, and an empty page comes back at once."""
        if next_link is not None:
            url = self.creds.url + next_link if next_link.startswith("/") else next_link
        else:
            query: dict[str, str] = {}
            if max_results is not None:
                query["max_results"] = str(max_results)
            if workflow_filter:
                query["workflow_filter"] = workflow_filter
            if wait and INBOX_WAIT in self.extensions:
                query["wait"] = str(wait)
            url = f"{self.base}/inbox" + (f"?{urlencode(query)}" if query else "")
        body = await self._json("GET", url)
        links = body.get("links") or {}
        return InboxPage(list(body.get("messages", [])), links.get("next"), body.get("approx_inbox_count"))

    async def iterate_inbox(self, *, workflow_filter: str | None = None, wait: int | None = None) -> AsyncIterator[str]:
        """Every message ID waiting, following v2 `links.next`; wait applies to the first page only."""
        page = await self.inbox(workflow_filter=workflow_filter, wait=wait)
        while True:
            for message_id in page.message_ids:
                yield message_id
            if page.next_link is None:
                return
            page = await self.inbox(next_link=page.next_link)

    # Sending ---------------------------------------------------------------------------------------------
    async def send(
        self,
        recipient: str,
        data: Source,
        *,
        workflow_id: str,
        subject: str | None = None,
        local_id: str | None = None,
        file_name: str | None = None,
        content_type: str | None = None,
        compress: bool = False,
        chunk_size: int | None = None,
        idempotency_key: str | None = None,
        journal: Path | None = None,
        progress: Progress | None = None,
        extra_headers: dict[str, str] | None = None,
        looked: Sized | None = None,
    ) -> str:
        """Send a message; returns its ID. A path or bytes are cut into chunks of chunk_size raw bytes (each
        gzipped on its own with compress); an async iterator is first spooled to a temporary file. Every send
        carries an Idempotency-Key (a fresh one unless given); with journal (a file path), an interrupted
        chunked send started with the same journal resumes at the first chunk not yet accepted. looked: the file's
        size and small content as look() found them just before (data must be that path, unchanged since)."""
        size_limit = chunk_size or self.chunk_size
        if not 0 < size_limit <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be between 1 and {MAX_CHUNK_BYTES} bytes (the API's limit)")
        with contextlib.ExitStack() as stack:
            path = await _as_path(data, stack)
            read_limit = min(PIECE, 0 if compress else size_limit)
            if looked is not None and isinstance(data, Path):
                total_size, whole = looked.size, looked.content if looked.size <= read_limit else None
            else:
                # One thread hop learns the size and, for a file of one small piece, reads it too.
                total_size, whole = await asyncio.to_thread(_size_and_bytes, path, read_limit)
            chunks = max(1, math.ceil(total_size / size_limit))
            if chunks == 1 and idempotency_key and IDEMPOTENCY in self.extensions:
                # One POST under the caller's key: repeated after a crash, it answers the message it made, so a
                # journal would add two fsyncs and nothing else.
                journal = None
            state = await asyncio.to_thread(UploadJournal.load, journal) if journal is not None else None
            if state is not None and not state.matches(path, total_size, size_limit, compress, recipient):
                state = None  # a journal of another send: start afresh
            resumed = state is not None
            key = (state.idempotency_key if state else None) or idempotency_key or str(uuid.uuid4())
            if state is None and journal is not None:
                state = await asyncio.to_thread(
                    UploadJournal.start, journal, path, total_size, size_limit, compress, recipient, key
                )
            headers = {"mex-To": recipient, "mex-WorkflowID": workflow_id, "mex-Chunk-Range": f"1:{chunks}"}
            for name, value in (
                ("mex-Subject", subject),
                ("mex-LocalID", local_id),
                ("mex-FileName", file_name),
                ("mex-Content-Type", content_type),
            ):
                if value:
                    headers[name] = value
            headers["Idempotency-Key"] = key
            headers.update(extra_headers or {})
            done = state.chunks_done if state is not None else 0
            message_id = state.message_id if state is not None else ""
            if not message_id:
                message_id = await self._post_chunk(
                    f"{self.base}/outbox",
                    path,
                    0,
                    size_limit,
                    total_size,
                    compress,
                    headers,
                    progress,
                    first=True,
                    whole=whole,
                )
                done = 1
                if state is not None:
                    await asyncio.to_thread(state.accepted, message_id, 1)
            elif progress is not None:
                progress(min(done * size_limit, total_size))
            for number in range(max(done, 1) + 1, chunks + 1):
                chunk_headers = {"mex-Chunk-Range": f"{number}:{chunks}"}
                try:
                    await self._post_chunk(
                        f"{self.base}/outbox/{quote(message_id)}/{number}",
                        path,
                        (number - 1) * size_limit,
                        size_limit,
                        total_size,
                        compress,
                        chunk_headers,
                        progress,
                        first=False,
                    )
                except MeshError as exc:
                    # A crash after the last chunk was accepted but before the journal said so, or after the send
                    # finished and its journal was gone (the caller's key, repeated, answered the message it had
                    # made): the server finalises a message only at its last chunk, sent after all the others.
                    replayed = idempotency_key is not None and IDEMPOTENCY in self.extensions
                    if (resumed or replayed) and exc.status == FINALISED_STATUS and exc.code == FINALISED_CODE:
                        break
                    raise
                if state is not None:
                    await asyncio.to_thread(state.accepted, message_id, number)
            if state is not None:
                await asyncio.to_thread(state.finish)
            return message_id

    async def _post_chunk(
        self,
        url: str,
        path: Path,
        offset: int,
        limit: int,
        total_size: int,
        compress: bool,
        headers: dict[str, str],
        progress: Progress | None,
        *,
        first: bool,
        whole: bytes | None = None,
    ) -> str:
        """POST one chunk; whole: the chunk's bytes, already read (a message of one small piece)."""
        length = max(0, min(limit, total_size - offset))
        extra = {"Content-Type": "application/octet-stream", **headers}
        with contextlib.ExitStack() as stack:
            if compress:
                spooled = stack.enter_context(tempfile.NamedTemporaryFile(prefix="mesh-chunk-"))
                await asyncio.to_thread(_gzip_range, path, offset, length, spooled)
                source, start, length = Path(spooled.name), 0, spooled.tell()
                extra["Content-Encoding"] = "gzip"
                if length > MAX_CHUNK_BYTES:
                    raise MeshError(0, f"a compressed chunk of {length} bytes is over the API's {MAX_CHUNK_BYTES}")
            else:
                source, start = path, offset
            extra["Content-Length"] = str(length)
            sent = [0]
            # A body of one piece is read once, in one thread hop, rather than streamed (small files are the
            # folder agent's common case).
            small = whole
            if small is None and length <= PIECE:
                small = await asyncio.to_thread(_read_exact, source, start, length)

            def body() -> AsyncIterator[bytes] | bytes:
                if progress is not None and sent[0]:
                    progress(-sent[0])  # a retry sends the chunk again
                sent[0] = 0
                if small is not None:
                    sent[0] = length
                    if progress is not None:
                        progress(length)
                    return small
                return _read_range(source, start, length, progress, sent)

            # The first POST is repeated only where our Idempotency-Key makes a repeat harmless.
            retry = not first or IDEMPOTENCY in self.extensions
            body_json = await self._json("POST", url, extra=extra, body=body, retry=retry)
        message_id = (body_json or {}).get("message_id") or (body_json or {}).get("messageID") or ""
        if first and not message_id:
            raise MeshError(0, "the server accepted the send without a message ID")
        return str(message_id)

    # Receiving -------------------------------------------------------------------------------------------
    async def download(
        self,
        message_id: str,
        destination: Path,
        *,
        journal: Path | None = None,
        progress: Progress | None = None,
        sync: bool = True,
    ) -> ReceivedMessage:
        """Stream a message into destination (written in place; the caller renames it where it belongs). Each
        chunk's gzip is undone as it arrives; its SHA-256 is checked against the server's Content-Digest when
        there is one. With journal, a download interrupted after chunk k resumes at chunk k + 1 (a message of one
        chunk keeps no journal: it is fetched again whole). sync=False leaves the last fsync of destination to the
        caller (the folder agent makes many files durable in one step)."""
        # One thread hop reads the journal and opens the file (the agent downloads many small files at once).
        state, out = await asyncio.to_thread(_open_download, destination, journal, message_id)
        done, offset = (state.chunks_done, state.bytes_done) if state is not None else (0, 0)
        if out is None:
            assert state is not None
            await asyncio.to_thread(state.finish)  # every chunk was in before a crash
            return ReceivedMessage(message_id, state.headers, offset, state.total)
        with out:
            if progress is not None and offset:
                progress(offset)
            writeback = _Writeback(out)
            try:
                total, headers, offset, state = await self._download_chunks(
                    message_id, out, max(done, 0) + 1, offset, state, journal, progress, writeback
                )
            finally:
                await writeback.settle()
            if sync:
                await asyncio.to_thread(_fsync_then, out, lambda: None)
            else:
                out.flush()
        if state is not None:
            await asyncio.to_thread(state.finish)
        return ReceivedMessage(message_id, headers, offset, total)

    async def _download_chunks(
        self,
        message_id: str,
        out: IO[bytes],
        number: int,
        offset: int,
        state: DownloadJournal | None,
        journal: Path | None,
        progress: Progress | None,
        writeback: _Writeback,
    ) -> tuple[int, dict[str, str], int, DownloadJournal | None]:
        """Chunks number.. into out at offset: (chunks in all, the last chunk's mex-* headers, bytes written, the
        journal, which a chunked download starts after its first chunk)."""
        while True:
            url = f"{self.base}/inbox/{quote(message_id)}" + ("" if number == 1 else f"/{number}")
            response = await self._request("GET", url)
            async with response:
                headers = {
                    k.lower().removeprefix("mex-"): v
                    for k, v in response.headers.items()
                    if k.lower().startswith("mex-")
                }
                total = _total_chunks(headers)
                offset += await _receive(response, out, progress, writeback)
            if number >= total:
                return total, headers, offset, state
            if state is None and journal is not None:
                state = DownloadJournal.start(journal, message_id)
            if state is not None:
                await writeback.settle()
                await asyncio.to_thread(_fsync_then, out, state.received, number, offset, total, headers)
            number += 1


# Helpers ---------------------------------------------------------------------------------------------------


async def _error(response: aiohttp.ClientResponse) -> MeshError:
    """A MESH error body (v1 or v2) as MeshError; anything else by its status."""
    async with response:
        text = await response.text(errors="replace")
        body: Any = None
        with contextlib.suppress(ValueError):
            body = await response.json(content_type=None)
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            first = detail[0]
            description = str(first.get("msg") or "")
            if "loc" in first:  # a validation error: say which field
                description = f"{'.'.join(str(p) for p in first['loc'])}: {description}"
            return MeshError(
                response.status,
                description,
                event=str(first.get("event") or ""),
                code=str(first.get("code") or ""),
                message_id=str(body.get("message_id") or ""),
            )
        if "errorDescription" in body:
            return MeshError(
                response.status,
                str(body["errorDescription"]),
                event=str(body.get("errorEvent") or ""),
                code=str(body.get("errorCode") or ""),
                message_id=str(body.get("messageID") or ""),
            )
    return MeshError(response.status, text.strip()[:300] or response.reason or "error")


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return min(float(response.headers.get("Retry-After", "0")), 60.0)
    except ValueError:
        return 0.0


def _total_chunks(headers: dict[str, str]) -> int:
    """n of `mex-Chunk-Range: x:n` (at least 1: the sandbox sends 1:0 for reports)."""
    _, _, total = headers.get("chunk-range", "1:1").partition(":")
    try:
        return max(1, int(total))
    except ValueError:
        return 1


class _Writeback:
    """Sets the disk to work on what a download has written so far (an fdatasync in a thread, not waited for)
    every WRITEBACK_BYTES, so its disk writes overlap its network reads and the fsync at the end finds little
    left. settle() waits for the one under way; call it before out is closed."""

    def __init__(self, out: IO[bytes]):
        self._out = out
        self._since = 0
        self._running: asyncio.Future[None] | None = None

    def wrote(self, size: int) -> None:
        self._since += size
        if self._since >= WRITEBACK_BYTES and (self._running is None or self._running.done()):
            self._since = 0
            self._out.flush()
            self._running = asyncio.get_running_loop().run_in_executor(None, os.fdatasync, self._out.fileno())

    async def settle(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            await running


async def _receive(
    response: aiohttp.ClientResponse, out: IO[bytes], progress: Progress | None, writeback: _Writeback
) -> int:
    """Write one chunk's body to out (gunzipped if it came gzip); its digest checked. Returns bytes written."""
    expected = _content_digest(response.headers.get("Content-Digest", ""))
    digest = hashlib.sha256()
    inflater = zlib.decompressobj(31) if response.headers.get("Content-Encoding", "").lower() == "gzip" else None
    written = 0
    async for piece in response.content.iter_chunked(PIECE):
        digest.update(piece)
        data = inflater.decompress(piece) if inflater is not None else piece
        if data:
            out.write(data)  # into the page cache: the fsync that makes it durable runs on a thread
            written += len(data)
            writeback.wrote(len(data))
        if progress is not None:
            progress(len(data))
    if inflater is not None:
        rest = inflater.flush()
        out.write(rest)
        written += len(rest)
    if expected is not None and digest.digest() != expected:
        raise IntegrityError(0, "a downloaded chunk does not match the SHA-256 the server gave for it")
    return written


def _open_download(
    destination: Path, journal: Path | None, message_id: str
) -> tuple[DownloadJournal | None, IO[bytes] | None]:
    """The download's journal (None: start afresh) and destination opened at its first byte not yet safely in,
    or no file when the journal says every chunk was in before a crash. A journal whose file has gone is
    dropped (resuming would leave the chunks before it as zeros)."""
    state = DownloadJournal.load(journal) if journal is not None else None
    if state is not None and (state.message_id != message_id or not destination.exists()):
        state = None  # another message's journal, or its file has gone: start again
    if state is None or not state.chunks_done:
        # A buffer size given: open() does not ask the file whether it is a terminal (one system call fewer).
        return state, destination.open("wb", buffering=io.DEFAULT_BUFFER_SIZE)
    if state.chunks_done >= state.total:
        return state, None
    out = destination.open("r+b")
    out.truncate(state.bytes_done)
    out.seek(state.bytes_done)
    return state, out


def _fsync_then(out: IO[bytes], then: Callable[..., None], *args: Any) -> None:
    """out's bytes on disk, then `then` (a journal recording them)."""
    out.flush()
    os.fsync(out.fileno())
    then(*args)


def _content_digest(value: str) -> bytes | None:
    """The sha-256 of an RFC 9530 Content-Digest header, or None."""
    for item in value.split(","):
        name, _, encoded = item.strip().partition("=")
        if name.strip().lower() == "sha-256" and encoded.startswith(":") and encoded.endswith(":"):
            with contextlib.suppress(ValueError):
                return base64.b64decode(encoded[1:-1])
    return None


async def _as_path(data: Source, stack: contextlib.ExitStack) -> Path:
    """A file to cut chunks from: the path itself, or a temporary file holding bytes or an iterator's output."""
    if isinstance(data, Path):
        return data
    # Closed (and so deleted) by the caller's ExitStack once the send is over.
    spooled = stack.enter_context(tempfile.NamedTemporaryFile(prefix="mesh-send-"))  # noqa: SIM115
    if isinstance(data, bytes):
        spooled.write(data)
    else:
        async for piece in data:
            await asyncio.to_thread(spooled.write, piece)
    spooled.flush()
    return Path(spooled.name)


def _size_and_bytes(path: Path, limit: int) -> tuple[int, bytes | None]:
    """A file's size, and its bytes when it is one piece that fits in a chunk of limit bytes. Plain os calls: a
    Python file object costs three more system calls (fstat, isatty, lseek), each a thread switch when it runs
    beside the event loop, and the agent does this for every small file it sends."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size > min(PIECE, limit):
            return size, None
        pieces, left = [], size
        while left > 0:
            piece = os.read(fd, left)
            if not piece:
                raise MeshError(0, f"{path} is shorter than it was when the send began")
            pieces.append(piece)
            left -= len(piece)
        return size, b"".join(pieces)
    finally:
        os.close(fd)


def _read_exact(path: Path, offset: int, length: int) -> bytes:
    return b"".join(_pieces(path, offset, length))


def _pieces(path: Path, offset: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        source.seek(offset)
        left = length
        while left > 0:
            piece = source.read(min(PIECE, left))
            if not piece:
                raise MeshError(0, f"{path} is shorter than it was when the send began")
            left -= len(piece)
            yield piece


async def _read_range(
    path: Path, offset: int, length: int, progress: Progress | None, sent: list[int]
) -> AsyncIterator[bytes]:
    pieces = _pieces(path, offset, length)
    while True:
        piece = await asyncio.to_thread(next, pieces, None)
        if piece is None:
            return
        sent[0] += len(piece)
        if progress is not None:
            progress(len(piece))
        yield piece


def _gzip_range(path: Path, offset: int, length: int, out: IO[bytes]) -> None:
    """gzip one chunk's raw bytes into out (the official rule: cut first, then compress each chunk alone)."""
    deflater = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    for piece in _pieces(path, offset, length):
        out.write(deflater.compress(piece))
    out.write(deflater.flush())
    out.flush()


async def gather_limited(coroutines: list[Awaitable[Any]], limit: int) -> list[Any]:
    """Run coroutines at most limit at a time (the agent's parallel transfers)."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))
