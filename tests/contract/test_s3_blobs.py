"""S3BlobStore against moto's server: multipart, abort, prefix, errors, bounded memory, and over HTTPS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import tracemalloc
import urllib.request
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiobotocore.session
import aiohttp
import pytest
import trustme

from broker.blobs import s3
from broker.blobs.protocol import BlobError, BlobNotFound
from broker.devsupport.s3_server import ACCESS_KEY, REGION, SECRET_KEY, fake_credentials, moto_server

MiB = 1024 * 1024
PART = s3.MIN_PART_SIZE
PREFIX = "mesh/blobs"


class SourceFailed(Exception):
    """Raised by a test's data source partway through a put."""


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own credential chain finds these; a developer's real profile must never be used."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in fake_credentials().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def raw(endpoint: str) -> AsyncIterator[Any]:
    """A plain client to set up buckets and look behind the store's back."""
    async with aiobotocore.session.get_session().create_client("s3", endpoint_url=endpoint, region_name=REGION) as c:
        yield c


@pytest.fixture
async def bucket(raw: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    await raw.create_bucket(Bucket=name)
    return name


def make_store(endpoint: str, bucket: str, **options: Any) -> s3.S3BlobStore:
    options.setdefault("part_size", PART)
    return s3.S3BlobStore(bucket, options.pop("prefix", PREFIX), endpoint_url=endpoint, region=REGION, **options)


@pytest.fixture
async def s3_store(endpoint: str, bucket: str) -> AsyncIterator[s3.S3BlobStore]:
    blobs = make_store(endpoint, bucket)
    await blobs.open()
    yield blobs
    await blobs.close()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(blobs: s3.S3BlobStore, key: str, piece_size: int = 256 * 1024) -> bytes:
    return b"".join([piece async for piece in blobs.get(key, piece_size=piece_size)])


async def keys(raw: Any, bucket: str) -> list[str]:
    listing = await raw.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


async def uploads_in_progress(raw: Any, bucket: str) -> list[dict[str, Any]]:
    return list((await raw.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))


async def test_small_put_is_one_plain_object(s3_store: s3.S3BlobStore, raw: Any, bucket: str) -> None:
    data = os.urandom(300 * 1024)

    assert await s3_store.put("msg/1", pieces(data, 64 * 1024)) == len(data)

    head = await raw.head_object(Bucket=bucket, Key=f"{PREFIX}/msg/1")
    # A multipart object's ETag ends in -<parts>; a single PutObject's never does.
    assert "-" not in head["ETag"]
    assert await uploads_in_progress(raw, bucket) == []
    assert await read_all(s3_store, "msg/1") == data


async def test_empty_put_stores_an_empty_object(s3_store: s3.S3BlobStore) -> None:
    assert await s3_store.put("empty", pieces(b"", 1)) == 0
    assert await s3_store.size("empty") == 0
    assert await read_all(s3_store, "empty") == b""


async def test_large_put_goes_multipart_and_round_trips_byte_exact(
    s3_store: s3.S3BlobStore, raw: Any, bucket: str
) -> None:
    data = os.urandom(PART * 7 // 2)

    # Odd piece sizes so part boundaries never line up with the source's pieces.
    assert await s3_store.put("big", pieces(data, MiB + 7)) == len(data)

    head = await raw.head_object(Bucket=bucket, Key=f"{PREFIX}/big")
    assert head["ETag"].strip('"').endswith("-4")
    assert await s3_store.size("big") == len(data)
    assert hashlib.sha256(await read_all(s3_store, "big")).digest() == hashlib.sha256(data).digest()
    assert await uploads_in_progress(raw, bucket) == []


async def test_exact_multiple_of_part_size_sends_no_empty_last_part(s3_store: s3.S3BlobStore) -> None:
    data = os.urandom(PART * 2)

    assert await s3_store.put("even", pieces(data, MiB)) == len(data)
    assert await read_all(s3_store, "even") == data


async def test_put_replaces_an_existing_blob(s3_store: s3.S3BlobStore) -> None:
    await s3_store.put("again", pieces(b"first version", 4))
    await s3_store.put("again", pieces(b"second", 4))

    assert await read_all(s3_store, "again") == b"second"


async def test_source_failing_mid_multipart_aborts_and_propagates_unchanged(
    s3_store: s3.S3BlobStore, raw: Any, bucket: str
) -> None:
    failure = SourceFailed("the client went away")

    async def failing() -> AsyncIterator[bytes]:
        for _ in range(PART * 2 // MiB + 1):
            yield os.urandom(MiB)
        raise failure

    with pytest.raises(SourceFailed) as caught:
        await s3_store.put("broken", failing())

    assert caught.value is failure
    assert await keys(raw, bucket) == []
    assert await uploads_in_progress(raw, bucket) == []
    with pytest.raises(BlobNotFound):
        await s3_store.size("broken")


async def test_source_failing_before_first_part_leaves_nothing(s3_store: s3.S3BlobStore, raw: Any, bucket: str) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a little"
        raise SourceFailed

    with pytest.raises(SourceFailed):
        await s3_store.put("broken", failing())

    assert await keys(raw, bucket) == []


async def test_cancelled_put_aborts_the_multipart_upload(s3_store: s3.S3BlobStore, raw: Any, bucket: str) -> None:
    one_part_sent = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for _ in range(PART // MiB + 1):
            yield os.urandom(MiB)
        one_part_sent.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(s3_store.put("cancelled", stalls()))
    await asyncio.wait_for(one_part_sent.wait(), 10)
    assert len(await uploads_in_progress(raw, bucket)) == 1
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert await uploads_in_progress(raw, bucket) == []
    assert await keys(raw, bucket) == []


async def test_prefix_is_applied_to_object_keys(endpoint: str, s3_store: s3.S3BlobStore, raw: Any, bucket: str) -> None:
    await s3_store.put("messages/M1/1", pieces(b"hello", 2))
    bare = s3.S3BlobStore.from_url(f"s3://{bucket}", endpoint_url=endpoint, region=REGION)
    await bare.open()
    try:
        await bare.put("top", pieces(b"level", 2))
        assert await read_all(bare, f"{PREFIX}/messages/M1/1") == b"hello"
    finally:
        await bare.close()

    assert sorted(await keys(raw, bucket)) == [f"{PREFIX}/messages/M1/1", "top"]


def test_from_url_parses_bucket_and_prefix() -> None:
    blobs = s3.S3BlobStore.from_url("s3://my-bucket/mesh/blobs/", endpoint_url="http://127.0.0.1:1", region=REGION)

    assert (blobs.bucket, blobs.prefix) == ("my-bucket", "mesh/blobs/")
    assert s3.S3BlobStore.from_url("s3://my-bucket").prefix == ""


@pytest.mark.parametrize("url", ["file:///tmp/blobs", "s3:///no-bucket", "s3://bucket/p?x=1"])
def test_from_url_rejects_other_urls(url: str) -> None:
    with pytest.raises(BlobError):
        s3.S3BlobStore.from_url(url)


def test_part_size_below_the_s3_minimum_is_refused() -> None:
    # moto, like S3, rejects parts under 5 MiB (S3_UPLOAD_PART_MIN_SIZE), so tests use the real minimum too.
    with pytest.raises(BlobError, match="part_size"):
        s3.S3BlobStore("bucket", part_size=PART - 1)


async def test_open_fails_naming_a_missing_bucket(endpoint: str) -> None:
    blobs = make_store(endpoint, "no-such-bucket-here")

    with pytest.raises(BlobError, match="no-such-bucket-here"):
        await blobs.open()
    await blobs.close()


async def test_explicit_credentials_are_used(endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in fake_credentials():
        monkeypatch.delenv(name)
    blobs = make_store(endpoint, bucket, access_key=ACCESS_KEY, secret_key=SECRET_KEY)

    await blobs.open()
    try:
        await blobs.put("k", pieces(b"v", 1))
        assert await blobs.size("k") == 1
    finally:
        await blobs.close()


async def test_missing_key_raises_blob_not_found(s3_store: s3.S3BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await s3_store.size("missing")
    with pytest.raises(BlobNotFound):
        await anext(s3_store.get("missing"))


async def test_no_local_file_so_downloads_stream(s3_store: s3.S3BlobStore) -> None:
    """S3 offers no zero-copy: open_file answers None, with no request, and downloads stream get() instead."""
    await s3_store.put("msg/1", pieces(b"stored", 3))
    assert await s3_store.open_file("msg/1") is None


async def test_delete_is_idempotent(s3_store: s3.S3BlobStore, raw: Any, bucket: str) -> None:
    await s3_store.put("gone", pieces(b"bytes", 5))

    await s3_store.delete("gone")
    await s3_store.delete("gone")
    await s3_store.delete("never-existed")

    assert await keys(raw, bucket) == []
    with pytest.raises(BlobNotFound):
        await s3_store.size("gone")


async def test_get_pieces_are_bounded_by_piece_size(s3_store: s3.S3BlobStore) -> None:
    data = os.urandom(200_003)
    await s3_store.put("pieces", pieces(data, 65_536))

    got = [piece async for piece in s3_store.get("pieces", piece_size=10_000)]

    assert all(0 < len(piece) <= 10_000 for piece in got)
    assert b"".join(got) == data


@pytest.mark.parametrize("key", ["", "/absolute", "a/../b", ".."])
async def test_invalid_keys_are_rejected(s3_store: s3.S3BlobStore, key: str) -> None:
    with pytest.raises(BlobError, match="invalid blob key"):
        await s3_store.put(key, pieces(b"x", 1))
    with pytest.raises(BlobError, match="invalid blob key"):
        await s3_store.size(key)


async def test_a_closed_store_refuses_calls(endpoint: str, bucket: str) -> None:
    blobs = make_store(endpoint, bucket)

    with pytest.raises(BlobError, match="not open"):
        await blobs.size("k")


async def test_backend_errors_are_translated(s3_store: s3.S3BlobStore, raw: Any, bucket: str) -> None:
    await raw.delete_bucket(Bucket=bucket)

    with pytest.raises(BlobError, match="NoSuchBucket") as caught:
        await s3_store.put("k", pieces(b"v", 1))
    assert type(caught.value) is BlobError


async def test_unreachable_endpoint_is_a_blob_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    blobs = make_store(f"http://127.0.0.1:{closed_port}", "any-bucket")

    # botocore retries a refused connection a few times, with backoff, before giving up (2-6 s).
    with pytest.raises(BlobError, match=r"any-bucket.*Could not connect"):
        await blobs.open()


def test_missing_aiobotocore_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "aiobotocore", None)

    with pytest.raises(BlobError, match=re.escape("pip install 'mesh-broker[s3]'")):
        s3.S3BlobStore("bucket")


async def test_put_memory_stays_near_part_size(endpoint: str, bucket: str) -> None:
    total, part = 64 * MiB, 8 * MiB
    blobs = make_store(endpoint, bucket, part_size=part)
    await blobs.open()

    async def generated() -> AsyncIterator[bytes]:
        for index in range(total // MiB):
            # A fresh object per piece, as a socket would give: nothing shared that could hide an allocation.
            yield bytes([index % 256]) * MiB

    tracemalloc.start()
    try:
        written = await blobs.put("huge", generated())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await blobs.close()

    print(f"peak traced memory for a {total // MiB} MiB put with {part // MiB} MiB parts: {peak / MiB:.1f} MiB")
    assert written == total
    # Each part in flight is held once, as the pieces it arrived in, and so is the part being gathered: what
    # transfer_buffer_bytes declares (40 MiB for 4 parts of 8 MiB in flight; 43 MiB measured, the rest a piece or two
    # being read). A body copied whole on its way out (bytes become a BytesIO, which aiohttp copies for its
    # getbuffer()) held each part twice: 74-75 MiB measured, over this bound. All 8 parts at once would be too.
    assert blobs.transfer_buffer_bytes == 5 * part
    assert peak < blobs.transfer_buffer_bytes + part


class PartsWatcher:
    """Wraps a store's UploadPart and CompleteMultipartUpload: counts parts in flight at once, slows each part a
    little so they can overlap, and can fail one part."""

    def __init__(self, store: s3.S3BlobStore, monkeypatch: pytest.MonkeyPatch, fail_part: int | None = None):
        self.in_flight = 0
        self.most_in_flight = 0
        self.sent: list[int] = []
        self.completed = 0
        client = store._client
        upload_part, complete = client.upload_part, client.complete_multipart_upload

        async def watched_upload_part(**kwargs: Any) -> Any:
            number = kwargs["PartNumber"]
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(0.2)
                if number == fail_part:
                    raise aiohttp.ClientConnectionError(f"connection reset sending part {number}")
                response = await upload_part(**kwargs)
                self.sent.append(number)
                return response
            finally:
                self.in_flight -= 1

        async def watched_complete(**kwargs: Any) -> Any:
            self.completed += 1
            return await complete(**kwargs)

        monkeypatch.setattr(client, "upload_part", watched_upload_part)
        monkeypatch.setattr(client, "complete_multipart_upload", watched_complete)


async def test_parts_go_up_in_parallel_bounded_by_part_concurrency(
    endpoint: str, bucket: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = make_store(endpoint, bucket, part_concurrency=3)
    await blobs.open()
    try:
        watcher = PartsWatcher(blobs, monkeypatch)
        data = os.urandom(PART * 6 + 1234)

        assert await blobs.put("parallel", pieces(data, MiB + 7)) == len(data)

        assert watcher.most_in_flight == 3
        assert sorted(watcher.sent) == list(range(1, 8))
        head = await raw.head_object(Bucket=bucket, Key=f"{PREFIX}/parallel")
        assert head["ETag"].strip('"').endswith("-7")
        assert await read_all(blobs, "parallel") == data  # parts reassembled in order, whatever order they finished
        assert await uploads_in_progress(raw, bucket) == []
    finally:
        await blobs.close()


@pytest.mark.parametrize("fail_part", [2, 7], ids=["early-part", "last-part"])
async def test_a_failing_part_aborts_the_upload_and_leaves_no_object(
    endpoint: str, bucket: str, raw: Any, monkeypatch: pytest.MonkeyPatch, fail_part: int
) -> None:
    """One part fails while others are in flight: those are cancelled, the upload is aborted and never completed,
    and the caller sees a BlobError; S3 shows neither an object nor an upload in progress."""
    blobs = make_store(endpoint, bucket, part_concurrency=3)
    await blobs.open()
    try:
        watcher = PartsWatcher(blobs, monkeypatch, fail_part=fail_part)

        with pytest.raises(BlobError, match=f"part {fail_part}"):
            await blobs.put("broken", pieces(os.urandom(PART * 6 + 1234), MiB))

        assert watcher.completed == 0
        assert watcher.in_flight == 0
        assert await keys(raw, bucket) == []
        assert await uploads_in_progress(raw, bucket) == []
        with pytest.raises(BlobNotFound):
            await blobs.size("broken")
    finally:
        await blobs.close()


def test_part_concurrency_below_one_is_refused() -> None:
    with pytest.raises(BlobError, match="part_concurrency"):
        s3.S3BlobStore("bucket", part_concurrency=0)


@pytest.fixture(scope="module")
def tls_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """moto behind HTTPS, with a certificate from a throwaway CA: the endpoint URL and the CA's file."""
    folder = tmp_path_factory.mktemp("s3-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    command += ["-c", str(folder / "cert.pem"), "-k", str(folder / "key.pem")]
    process = subprocess.Popen(
        command, env={**os.environ, **fake_credentials()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        trusted = ssl.create_default_context(cafile=str(folder / "ca.pem"))
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1, context=trusted):
                    break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError("moto's HTTPS server exited before answering") from None
                time.sleep(0.1)
        else:
            raise RuntimeError("moto's HTTPS server did not answer")
        yield url, folder / "ca.pem"
    finally:
        process.terminate()
        process.wait(10)


async def test_over_https_parts_go_as_aws_chunked_bodies_with_their_crc32_and_round_trip(
    tls_endpoint: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTPS, as in production, botocore sends each body aws-chunked with its CRC32 as a trailer (over plain
    HTTP, as in the rest of this file, the CRC32 is a header and the body goes as it is): both read the store's
    bodies (_Part) without a whole copy, and what S3 stores and the CRC32s it was given must match the data."""
    url, ca_file = tls_endpoint
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    name = f"tls-{uuid.uuid4().hex[:16]}"
    blobs = make_store(url, name)
    async with aiobotocore.session.get_session().create_client("s3", endpoint_url=url, region_name=REGION) as raw:
        await raw.create_bucket(Bucket=name)
        await blobs.open()
        sent: dict[int, str] = {}
        client = blobs._client
        upload_part = client.upload_part

        async def recorded_upload_part(**kwargs: Any) -> Any:
            response = await upload_part(**kwargs)
            sent[kwargs["PartNumber"]] = response["ChecksumCRC32"]
            return response

        monkeypatch.setattr(client, "upload_part", recorded_upload_part)
        trailers: list[str] = []

        def record_trailer(request: Any, **_: Any) -> None:
            values = [request.headers.get(name, b"") for name in ("Content-Encoding", "X-Amz-Trailer")]
            trailers.append(" ".join(value.decode() if isinstance(value, bytes) else value for value in values))

        client.meta.events.register("before-send.s3.UploadPart", record_trailer)
        client.meta.events.register("before-send.s3.PutObject", record_trailer)
        try:
            data = os.urandom(PART * 5 // 2)
            small = os.urandom(300 * 1024)

            piece = MiB + 7
            assert await blobs.put("big", pieces(data, piece)) == len(data)
            assert await blobs.put("small", pieces(small, 64 * 1024)) == len(small)

            assert trailers == ["aws-chunked x-amz-checksum-crc32"] * 4  # 3 parts, 1 PutObject: the HTTPS path
            assert await read_all(blobs, "big") == data
            assert await read_all(blobs, "small") == small
            # A part is the whole pieces that first reach part_size.
            step = -(-PART // piece) * piece
            parts = [data[start : start + step] for start in range(0, len(data), step)]
            assert len(parts) == 3
            # moto echoes the CRC32 it was sent (it does not check it): botocore computed it over the right bytes.
            assert [sent[number] for number in sorted(sent)] == [crc32(part) for part in parts]
            head = await raw.head_object(Bucket=name, Key=f"{PREFIX}/small", ChecksumMode="ENABLED")
            assert head["ChecksumCRC32"] == crc32(small)
        finally:
            await blobs.close()


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
