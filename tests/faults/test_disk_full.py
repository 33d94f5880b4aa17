"""A full disk under the embedded blob store: a 503 with Retry-After (code InsufficientStorage), no message, no bytes
left behind, and the send goes through once there is room again.

Two real mechanisms, neither needing root or a mount: RLIMIT_FSIZE on the broker process (the kernel fails any
write past the limit with EFBIG, after first taking what fits: a short write), and /dev/full, which fails every
write with ENOSPC, for the store on its own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.protocol import BlobStoreFull
from broker.errors import RETRY_AFTER_SECONDS
from tests.faults.conftest import ALICE, BOB, broker_env
from tests.faults.mesh_http import Caller
from tests.integration.broker_process import BrokerProcess

pytestmark = pytest.mark.faults

MiB = 1024 * 1024
#: No file the broker writes may grow past this. Not a multiple of the store's 1 MiB write buffer, so the write
#: that crosses it is a short one: the kernel takes what fits and says nothing, and only the next write fails.
LIMIT = MiB + MiB // 2
TOO_BIG = os.urandom(LIMIT + 200_000)
FITS = os.urandom(300_000)


def blob_files(data_dir: Path) -> set[Path]:
    return {path for path in (data_dir / "blobs").rglob("*") if path.is_file()}


def test_a_full_disk_is_503_and_leaves_nothing_behind(tmp_path: Path) -> None:
    broker = BrokerProcess(data_dir=tmp_path / "data", env=broker_env(), file_size_limit=LIMIT)
    with broker:
        alice, bob = Caller(broker, ALICE), Caller(broker, BOB)
        kept = alice.send(BOB, FITS, local_id="fits").json()["message_id"]
        parts = alice.send(BOB, FITS, local_id="parts", chunks=2).json()["message_id"]
        stored = blob_files(broker.data_dir)

        for response in (
            alice.send(BOB, TOO_BIG, local_id="too-big"),
            alice.upload_chunk(parts, 2, 2, TOO_BIG),
        ):
            assert response.status_code == 503, (response.status_code, response.text)
            assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
            (detail,) = response.json()["detail"]
            assert detail["code"] == "InsufficientStorage", detail

        assert blob_files(broker.data_dir) == stored, "a failed write left its bytes behind"
        assert alice.track_local_id("too-big").status_code == 404
        assert alice.track(parts).json()["status"] == "uploading"
        assert bob.inbox() == [kept]
        assert bob.download(kept) == (200, FITS)
        assert '"action":"request_failed"' not in broker.output()
        for caller in (alice, bob):
            caller.close()

    # Room again (the limit lifted, as when an operator frees space): the same requests now go through.
    broker.file_size_limit = None
    with broker:
        alice, bob = Caller(broker, ALICE), Caller(broker, BOB)
        assert alice.upload_chunk(parts, 2, 2, TOO_BIG).status_code == 202
        retried = alice.send(BOB, TOO_BIG, local_id="too-big").json()["message_id"]
        assert sorted(bob.inbox()) == sorted([kept, parts, retried])
        assert bob.download(parts, 2) == (200, TOO_BIG)
        assert bob.download(retried) == (200, TOO_BIG)
        for caller in (alice, bob):
            caller.close()


async def _pieces(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_enospc_is_blob_store_full_and_the_file_is_removed(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    await store.open()
    try:
        # A key whose file is /dev/full: every write to it fails with ENOSPC, as on a disk with no room left.
        (tmp_path / "blobs" / "day").mkdir()
        (tmp_path / "blobs" / "day" / "full").symlink_to("/dev/full")
        for body in (b"small", os.urandom(3 * MiB)):  # one write, and a write per buffer
            with pytest.raises(BlobStoreFull):
                await store.put("day/full", _pieces(body))
            assert not (tmp_path / "blobs" / "day" / "full").is_symlink(), "the failed put left its file behind"
            (tmp_path / "blobs" / "day" / "full").symlink_to("/dev/full")
        assert await store.put("day/room", _pieces(b"room elsewhere")) == len(b"room elsewhere")
    finally:
        await store.close()
