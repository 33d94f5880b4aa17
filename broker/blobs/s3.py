"""The production blob store: one S3 object per blob through one long-lived aiobotocore client and its pool."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import io
import itertools
import logging
import random
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import aiohttp

from broker.blobs.protocol import BlobError, BlobNotFound, StoredBlob

try:
    import aiobotocore.config
    import aiobotocore.session
    import botocore.exceptions
except ImportError:  # pragma: no cover - exercised only without the extra installed
    aiobotocore = None
    botocore = None

log = logging.getLogger("broker.blobs.s3")
INSTALL_HINT = "S3 blob storage needs aiobotocore: pip install 'mesh-broker[s3]'"
MiB = 1024 * 1024
#: S3 rejects a multipart upload whose parts, other than the last, are smaller than this.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
#: S3 numbers parts 1..10000; past that a blob needs a larger part_size.
MAX_PARTS = 10_000
#: Parts of one blob on their way to S3 at once: one connection's throughput is bounded by its round trips and
#: S3's per-request speed, several in parallel fill the link; each costs one part_size of memory (see _Part).
PART_CONCURRENCY = 4
#: What a part's small pieces are joined up to on their way to the socket (aiohttp's own step for a file body).
SEND_STEP = 256 * 1024
#: Error codes S3 (and compatible stores) use for a missing object; HeadObject has no body, hence the bare 404.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: CRC32 on every part and on the whole upload, the way s3transfer does it: S3 then verifies what it stored.
CHECKSUM = "CRC32"
#: botocore's "standard" retry mode, chosen explicitly rather than left to botocore's default ("legacy", or
#: whatever AWS_RETRY_MODE says on the host): it retries connection errors, timeouts, throttling and 500/502/503/
#: 504 answers, waiting a random 0..2^(n-1) s (at most 20 s) before retry n, and draws on a per-client quota
#: (500 units, 5 a retry, 10 after a timeout; refilled by successes) that stops retrying when most requests fail,
#: so a store that is down fails fast instead of multiplying its load.
#: Every body the store sends is immutable bytes in memory (a _Part), so a retried request resends exactly what the
#: first sent.
RETRY_MODE = "standard"
#: The longest wait before a retry in that mode, seconds; a GetObject stream that breaks is resumed on the same terms.
MAX_BACKOFF_SECONDS = 20.0


class _Translate:
    """Turns botocore, aiobotocore and connection errors into BlobError at this boundary."""

    def __init__(self, action: str, bucket: str, key: str | None = None):
        self._action = action
        self._where = f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket!r}"

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or botocore is None:
            return
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            if code in NOT_FOUND_CODES:
                raise BlobNotFound(f"no blob at {self._where}") from None
            message = error.get("Message") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            raise BlobError(f"S3 {self._action} of {self._where} failed: {code} {message}".rstrip()) from exc
        # aiobotocore wraps most transport failures in BotoCoreError, but a dropped stream can surface raw.
        if isinstance(exc, botocore.exceptions.BotoCoreError | aiohttp.ClientError | OSError):
            raise BlobError(f"S3 {self._action} of {self._where} failed: {exc}") from exc


class S3BlobStore:
    """Each blob is one object under prefix; a large put streams through a multipart upload, a few parts in flight
    at once, so memory stays near part_concurrency parts whatever the blob's size."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        part_size: int = 8 * MiB,
        part_concurrency: int = PART_CONCURRENCY,
        max_pool_connections: int = 20,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ):
        if aiobotocore is None:
            raise BlobError(INSTALL_HINT)
        if not bucket or "/" in bucket:
            raise BlobError(f"invalid S3 bucket name {bucket!r}")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise BlobError(f"S3 part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, not {part_size}")
        if (access_key is None) != (secret_key is None):
            raise BlobError("give both access_key and secret_key, or neither to use the usual AWS credentials")
        if part_concurrency < 1:
            raise BlobError("part_concurrency must be at least 1")
        if max_pool_connections < 1:
            raise BlobError("max_pool_connections must be at least 1")
        if max_attempts < 1:
            raise BlobError("max_attempts must be at least 1")
        self.bucket = bucket
        stripped = prefix.strip("/")
        self.prefix = f"{stripped}/" if stripped else ""
        self._endpoint_url = endpoint_url
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._part_size = part_size
        self._part_concurrency = part_concurrency
        self._max_pool_connections = max_pool_connections
        #: Retry policy and timeouts, per request (see RETRY_MODE).
        self.max_attempts = max_attempts
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, region: str | None = None, **options: Any
    ) -> S3BlobStore:
        """s3://bucket/prefix; the prefix may be empty. options go to the constructor (part_size, credentials...)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BlobError(f"not an S3 blob URL (s3://bucket/prefix): {url!r}")
        if parts.query or parts.fragment:
            raise BlobError(f"an S3 blob URL takes no query or fragment: {url!r}")
        return cls(parts.netloc, parts.path, endpoint_url=endpoint_url, region=region, **options)

    @property
    def transfer_buffer_bytes(self) -> int:
        # The part being gathered and each part in flight, each held once (as the pieces it arrived in, see _Part),
        # each at most one piece over part_size; what botocore and aiohttp copy from them is a piece at a time.
        return (self._part_concurrency + 1) * self._part_size

    async def open_file(self, key: str) -> BinaryIO | None:
        self._key(key)  # an invalid key is refused here as by every other call
        return None  # objects live behind HTTP: downloads stream get() instead

    async def open(self) -> None:
        if self._client is not None:
            return
        credentials = {}
        if self._access_key is not None:
            # Otherwise botocore's own chain finds them: AWS_* variables, profiles, instance roles.
            credentials = {"aws_access_key_id": self._access_key, "aws_secret_access_key": self._secret_key}
        # A request that still fails after max_attempts raises, and is a BlobError here: the client hears 503 with
        # Retry-After (broker/middlewares.py), and no row was written for bytes that were not stored.
        config = aiobotocore.config.AioConfig(
            max_pool_connections=self._max_pool_connections,
            retries={"mode": RETRY_MODE, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )
        stack = contextlib.AsyncExitStack()
        try:
            async with _Translate("client setup", self.bucket):
                self._client = await stack.enter_async_context(
                    aiobotocore.session.get_session().create_client(
                        "s3", endpoint_url=self._endpoint_url, region_name=self._region, config=config, **credentials
                    )
                )
            try:
                async with _Translate("HeadBucket", self.bucket):
                    await self._client.head_bucket(Bucket=self.bucket)
            except BlobNotFound:
                raise BlobError(f"S3 bucket {self.bucket!r} does not exist") from None
        except BaseException:
            self._client = None
            await stack.aclose()
            raise
        self._stack = stack

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise BlobError(f"invalid blob key {key!r}")
        return self.prefix + key

    @property
    def _s3(self) -> Any:
        if self._client is None:
            raise BlobError("the S3 blob store is not open")
        return self._client

    async def put(self, key: str, data: AsyncIterable[bytes]) -> int:
        name = self._key(key)
        client = self._s3
        # A part is the pieces as they arrived, never joined into one buffer (see _Part): the part being gathered
        # and the parts in flight are each held once, so a put holds at most transfer_buffer_bytes.
        pending: list[bytes] = []
        pending_size = 0
        size = 0
        upload: _MultipartUpload | None = None
        try:
            async for piece in data:
                # A bytearray or memoryview may be reused by its producer once we ask for the next piece.
                pending.append(piece if isinstance(piece, bytes) else bytes(piece))
                pending_size += len(piece)
                size += len(piece)
                if pending_size >= self._part_size:
                    if upload is None:
                        upload = _MultipartUpload(self, name, await self._start_upload(name), self._part_concurrency)
                    part = _Part(pending)
                    pending = []
                    pending_size = 0
                    await upload.add(part)
                    del part
            if upload is None:
                async with _Translate("PutObject", self.bucket, name):
                    await client.put_object(
                        Bucket=self.bucket, Key=name, Body=_Part(pending), ChecksumAlgorithm=CHECKSUM
                    )
                return size
            if pending:
                part = _Part(pending)
                pending = []
                await upload.add(part)
                del part
            await upload.complete()
        except BaseException:
            if upload is not None:
                await asyncio.shield(upload.abort())
            raise
        return size

    async def _start_upload(self, name: str) -> str:
        task = asyncio.ensure_future(self._create_upload(name))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The request may already have reached S3: learn the upload's id so it can be aborted, not leaked.
            with contextlib.suppress(Exception):
                await self._abort(name, await task)
            raise

    async def _create_upload(self, name: str) -> str:
        async with _Translate("CreateMultipartUpload", self.bucket, name):
            response = await self._s3.create_multipart_upload(Bucket=self.bucket, Key=name, ChecksumAlgorithm=CHECKSUM)
        return str(response["UploadId"])

    async def _upload_part(self, name: str, upload_id: str, number: int, body: _Part) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise BlobError(f"blob {name!r} needs more than {MAX_PARTS} parts of {self._part_size} bytes")
        async with _Translate(f"UploadPart {number}", self.bucket, name):
            response = await self._s3.upload_part(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm=CHECKSUM,
            )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if "ChecksumCRC32" in response:
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    async def _complete(self, name: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        async with _Translate("CompleteMultipartUpload", self.bucket, name):
            await self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )

    async def _abort(self, name: str, upload_id: str) -> None:
        # Best effort: the caller's own exception matters more, and a bucket lifecycle rule reaps any leftover.
        with contextlib.suppress(BlobError):
            async with _Translate("AbortMultipartUpload", self.bucket, name):
                await self._s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    async def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The blob's bytes in pieces. botocore retries the GetObject request, but not its body once it streams: a
        body that breaks midway (a reset, a read timeout, a body cut short) is resumed here where it broke, by a
        ranged GetObject of the same object (If-Match its ETag, checked against Content-Range), after the wait
        botocore's standard mode would take. max_attempts tries at one offset, as for any request, then BlobError;
        a resumed stream that moves on starts its count again."""
        name = self._key(key)
        async with _Translate("GetObject", self.bucket, name):
            response = await self._s3.get_object(Bucket=self.bucket, Key=name)
        etag: str | None = response.get("ETag")
        size = int(response["ContentLength"])
        delivered = 0
        tries = 1
        while True:
            broke: Exception | None = None
            # Closing the body returns or drops the pooled connection even when the reader stops early.
            async with response["Body"] as body:
                while True:
                    try:
                        piece = await body.read(piece_size)
                    except Exception as exc:
                        if not _stream_broke(exc):
                            raise
                        broke = exc
                        break
                    if not piece:
                        break
                    delivered += len(piece)
                    tries = 1
                    yield piece
            if broke is None and delivered == size:
                return
            cause = broke or f"the body ended at byte {delivered} of {size}"
            if tries >= self.max_attempts:
                raise BlobError(
                    f"S3 GetObject of s3://{self.bucket}/{name} broke at byte {delivered} of {size} "
                    f"{tries} times: {cause}"
                ) from broke
            wait = _backoff(tries)
            log.warning(
                "S3 stream broke; resuming",
                extra={
                    "action": "blob_read_resumed",
                    "key": name,
                    "offset": delivered,
                    "size": size,
                    "try": tries + 1,
                    "wait_seconds": round(wait, 3),
                    "cause": str(cause),
                },
            )
            await asyncio.sleep(wait)
            tries += 1
            response = await self._get_from(name, etag, delivered, size)

    async def _get_from(self, name: str, etag: str | None, offset: int, size: int) -> Any:
        """GetObject of the bytes from offset on, of the object whose first bytes were read (If-Match its ETag):
        Content-Range must say exactly those bytes, so that none is sent twice or skipped."""
        match = {"IfMatch": etag} if etag else {}
        async with _Translate("GetObject (resumed)", self.bucket, name):
            response = await self._s3.get_object(Bucket=self.bucket, Key=name, Range=f"bytes={offset}-", **match)
        expected = f"bytes {offset}-{size - 1}/{size}"
        if response.get("ContentRange") != expected:
            response["Body"].close()
            raise BlobError(
                f"S3 answered the resumed GetObject of s3://{self.bucket}/{name} with Content-Range "
                f"{response.get('ContentRange')!r}, not {expected!r}"
            )
        return response

    async def size(self, key: str) -> int:
        name = self._key(key)
        async with _Translate("HeadObject", self.bucket, name):
            response = await self._s3.head_object(Bucket=self.bucket, Key=name)
        return int(response["ContentLength"])

    async def delete(self, key: str) -> None:
        name = self._key(key)
        # DeleteObject answers 204 for a missing key, so a repeated delete is already harmless.
        async with _Translate("DeleteObject", self.bucket, name):
            await self._s3.delete_object(Bucket=self.bucket, Key=name)

    async def scan(self, *, page_size: int = 1000) -> AsyncIterator[list[StoredBlob]]:
        paginator = self._s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": page_size}
        ).__aiter__()
        while True:
            async with _Translate("ListObjectsV2", self.bucket):
                try:
                    page = await pages.__anext__()
                except StopAsyncIteration:
                    return
            found = [
                StoredBlob(item["Key"][len(self.prefix) :], item["LastModified"])
                for item in page.get("Contents", ())
                if len(item["Key"]) > len(self.prefix)
            ]
            if found:
                yield found


class _MultipartUpload:
    """One multipart upload's parts in flight: at most `concurrency` at once (add waits for a free slot), completed
    only when every part has succeeded, aborted (parts still in flight cancelled first) when any fails, so a blob is
    either whole or absent, never partly visible."""

    def __init__(self, store: S3BlobStore, name: str, upload_id: str, concurrency: int):
        self._store = store
        self._name = name
        self._upload_id = upload_id
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._parts: list[dict[str, Any]] = []
        self._failure: BaseException | None = None
        self._numbered = 0

    async def add(self, body: _Part) -> None:
        """Start sending body as the next part once a slot is free; a part that failed meanwhile raises here."""
        self._raise_failure()
        await self._slots.acquire()
        try:
            self._raise_failure()
        except BaseException:
            self._slots.release()
            raise
        self._numbered += 1
        task = asyncio.create_task(self._send(self._numbered, body))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def complete(self) -> None:
        """Wait for every part, then make the object visible; the first failed part raises instead."""
        if self._running:
            await asyncio.wait(set(self._running))
        self._raise_failure()
        self._parts.sort(key=lambda part: int(part["PartNumber"]))
        await self._store._complete(self._name, self._upload_id, self._parts)

    async def abort(self) -> None:
        """Cancel the parts in flight, wait for them to stop, and abort the upload (best effort, as _abort)."""
        running = set(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
        await self._store._abort(self._name, self._upload_id)

    async def _send(self, number: int, body: _Part) -> None:
        try:
            self._parts.append(await self._store._upload_part(self._name, self._upload_id, number, body))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
        finally:
            self._slots.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


class _Part:
    """One request body (a part, or a small blob's PutObject) as the pieces it arrived in, read-only.

    botocore turns a bytes body into a BytesIO, and aiohttp sends a BytesIO after asking for its buffer
    (BytesIO.getbuffer), which copies the whole part: each part in flight would be held twice. This body is neither
    bytes nor an io.IOBase. botocore reads it as a seekable file: its CRC32 (S3 checks it), over plain HTTP the
    payload's SHA-256 for the signature, and over HTTPS the aws-chunked stream that carries the CRC32 as a trailer,
    each a piece at a time, seeking back to the start before each read and before a retry. aiohttp, where it is
    the body itself (plain HTTP), sends it as an async iterable: the pieces themselves, immutable, without a copy,
    under the Content-Length botocore set. So a part costs its own bytes once, plus a piece while it is read."""

    def __init__(self, pieces: list[bytes]):
        self._pieces = pieces
        #: Where each piece starts in the body, and the body's length last.
        self._starts = [0, *itertools.accumulate(len(piece) for piece in pieces)]
        self._position = 0

    @property
    def size(self) -> int:
        return self._starts[-1]

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence {whence}")
        base = bases[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._position + size)
        if self._position >= end:
            return b""
        found: list[bytes] = []
        index = bisect.bisect_right(self._starts, self._position) - 1
        while self._position < end:
            start, piece = self._starts[index], self._pieces[index]
            take = piece[self._position - start : end - start]  # the piece itself (no copy) when taken whole
            found.append(take)
            self._position += len(take)
            index += 1
        return found[0] if len(found) == 1 else b"".join(found)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # aiohttp's sending of this body (plain HTTP): from where botocore left the position (the start), with
        # its own cursor, so an earlier attempt's writer that still runs cannot move it. Small pieces (a slow
        # client's) are joined up to SEND_STEP, so that a part is not thousands of tiny socket writes; a piece that
        # large already goes as it is.
        position = self._position
        index = bisect.bisect_right(self._starts, position) - 1
        batch: list[bytes] = []
        batched = 0
        while position < self.size:
            piece = self._pieces[index]
            take = piece[position - self._starts[index] :]
            position += len(take)
            index += 1
            batch.append(take)
            batched += len(take)
            if batched >= SEND_STEP:
                yield batch[0] if len(batch) == 1 else b"".join(batch)
                batch, batched = [], 0
        if batched:
            yield batch[0] if len(batch) == 1 else b"".join(batch)


def _stream_broke(exc: Exception) -> bool:
    """Whether a body read failed for its connection (aiobotocore wraps most of these in BotoCoreError: a read
    timeout, a body shorter than its Content-Length; some surface raw from aiohttp or the socket)."""
    return isinstance(exc, botocore.exceptions.BotoCoreError | aiohttp.ClientError | OSError)


def _backoff(tries: int) -> float:
    """botocore's standard mode: before try n + 1, a random wait of 0..2^(n-1) s, at most MAX_BACKOFF_SECONDS."""
    return random.random() * min(MAX_BACKOFF_SECONDS, 2.0 ** (tries - 1))
