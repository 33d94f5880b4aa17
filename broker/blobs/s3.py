"""The production blob store: one S3 object per blob through one long-lived aiobotocore client and its pool."""

from __future__ import annotations

import asyncio
import contextlib
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

INSTALL_HINT = "S3 blob storage needs aiobotocore: pip install 'mesh-broker[s3]'"
MiB = 1024 * 1024
#: S3 rejects a multipart upload whose parts, other than the last, are smaller than this.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
#: S3 numbers parts 1..10000; past that a blob needs a larger part_size.
MAX_PARTS = 10_000
#: Error codes S3 (and compatible stores) use for a missing object; HeadObject has no body, hence the bare 404.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
#: CRC32 on every part and on the whole upload, the way s3transfer does it: S3 then verifies what it stored.
CHECKSUM = "CRC32"
#: botocore's "standard" retry mode, chosen explicitly rather than left to botocore's default ("legacy", or
#: whatever AWS_RETRY_MODE says on the host): it retries connection errors, timeouts, throttling and 500/502/503/
#: 504 answers, waiting a random 0..2^(n-1) s (at most 20 s) before retry n, and draws on a per-client quota
#: (500 units, 5 a retry, 10 after a timeout; refilled by successes) that stops retrying when most requests fail,
#: so a store that is down fails fast instead of multiplying its load.
#: Every body the store sends is bytes in memory, so a retried request resends exactly what the first sent.
RETRY_MODE = "standard"


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
    """Each blob is one object under prefix; puts stream through multipart uploads so memory stays near part_size."""

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
        # A part is gathered, then copied once more by botocore while it is sent.
        return 2 * self._part_size

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
        # Pieces are joined once per part: growing one bytearray would reallocate, and botocore copies the
        # body into a BytesIO anyway, so a part costs about twice part_size at its peak.
        pending: list[bytes] = []
        pending_size = 0
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for piece in data:
                # A bytearray or memoryview may be reused by its producer once we ask for the next piece.
                pending.append(piece if isinstance(piece, bytes) else bytes(piece))
                pending_size += len(piece)
                size += len(piece)
                if pending_size >= self._part_size:
                    if upload_id is None:
                        upload_id = await self._start_upload(name)
                    body = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    parts.append(await self._upload_part(name, upload_id, len(parts) + 1, body))
                    del body
            if upload_id is None:
                async with _Translate("PutObject", self.bucket, name):
                    await client.put_object(
                        Bucket=self.bucket, Key=name, Body=b"".join(pending), ChecksumAlgorithm=CHECKSUM
                    )
                return size
            if pending:
                body = b"".join(pending)
                pending.clear()
                parts.append(await self._upload_part(name, upload_id, len(parts) + 1, body))
                del body
            async with _Translate("CompleteMultipartUpload", self.bucket, name):
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(name, upload_id))
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

    async def _upload_part(self, name: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
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

    async def _abort(self, name: str, upload_id: str) -> None:
        # Best effort: the caller's own exception matters more, and a bucket lifecycle rule reaps any leftover.
        with contextlib.suppress(BlobError):
            async with _Translate("AbortMultipartUpload", self.bucket, name):
                await self._s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)

    async def get(self, key: str, *, piece_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        name = self._key(key)
        async with _Translate("GetObject", self.bucket, name):
            response = await self._s3.get_object(Bucket=self.bucket, Key=name)
        # Closing the body returns or drops the pooled connection even when the reader stops early.
        async with response["Body"] as body:
            while True:
                async with _Translate("GetObject read", self.bucket, name):
                    piece = await body.read(piece_size)
                if not piece:
                    return
                yield piece

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
