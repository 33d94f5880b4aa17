"""docs/operations.md's backup and restore, tried: messages of every kind (small ones kept inline, larger ones in
the blob store, a chunked one) are backed up while the broker runs, restored into a fresh broker, and every one
is found there byte for byte. Embedded: `mesh-broker backup` (SQLite's online backup and the blob folder).
PostgreSQL and S3: pg_dump and pg_restore into a new database, the bucket's objects copied into a new bucket."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.devsupport import pg_server, s3_server
from broker.settings import Settings
from tests.api.conftest import AiohttpClient
from tests.api.helpers import MB1, MB2, download, inbox_ids, send_chunk, start_chunked
from tests.conftest import production_settings
from tests.integration.broker_process import run_cli
from tests.ops.deploy_assets import run
from tests.support import Mesh

#: Kept inline (at most MESH_INLINE_CHUNK_BYTES) and in the blob store.
BODIES = [b"a small one", os.urandom(200_000)]
CHUNKS = [os.urandom(70_000), b"the last chunk"]


async def send_every_kind(client: TestClient) -> dict[str, bytes]:
    """Message ID -> the whole body, for every message sent to MB2."""
    sender = Mesh(client, MB1)
    sent = {await sender.send_ok(MB2, body): body for body in BODIES}
    chunked = await start_chunked(sender, MB2, CHUNKS[0], len(CHUNKS))
    response = await send_chunk(sender, chunked, 2, len(CHUNKS), CHUNKS[1])
    assert response.status == 202, await response.text()
    sent[chunked] = b"".join(CHUNKS)
    return sent


async def received(client: TestClient) -> dict[str, bytes]:
    """Every message in MB2's inbox with its whole body, chunk by chunk."""
    receiver = Mesh(client, MB2)
    found = {}
    for message_id in await inbox_ids(receiver):
        first = await download(receiver, message_id, headers={"Accept-Encoding": "identity"})
        assert first.status in (200, 206), await first.text()
        body = await first.read()
        total = int(first.headers.get("mex-Chunk-Range", "1:1").split(":")[1])
        for number in range(2, total + 1):
            more = await download(receiver, message_id, number, headers={"Accept-Encoding": "identity"})
            assert more.status in (200, 206), await more.text()
            body += await more.read()
        found[message_id] = body
    return found


async def test_embedded_backup_restores_into_a_fresh_broker(
    aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(settings))
    sent = await send_every_kind(client)
    assert len(list((settings.data_dir / "blobs").rglob("*.*"))) >= 2, "some bodies are in the blob folder"

    # Online: the broker above is still running.
    copied = run_cli(
        tmp_path,
        ["backup", str(tmp_path / "backup")],
        env={"MESH_DATA_DIR": str(settings.data_dir)},
        data_dir_flag=False,
    )
    assert copied.returncode == 0, copied.stderr
    assert "mesh.sqlite3" in copied.stdout
    await Mesh(client, MB1).send_ok(MB2, b"after the backup")
    await client.close()

    restored_dir = tmp_path / "restored"
    shutil.copytree(tmp_path / "backup", restored_dir)
    restored = await aiohttp_client(create_app(settings.with_(data_dir=restored_dir)))
    assert await received(restored) == sent


def test_backup_refuses_a_folder_in_use_and_a_production_store(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "something").write_text("x")
    data = tmp_path / "data"
    run_cli(data, ["mailbox", "list"])  # creates the store
    refused = run_cli(data, ["backup", str(tmp_path / "used")])
    assert refused.returncode == 1 and "not empty" in refused.stderr
    production = run_cli(
        data, ["backup", str(tmp_path / "new")], env={"MESH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    )
    assert production.returncode == 1 and "pg_dump" in production.stderr


async def copy_bucket(endpoint: str, source: str, target: str) -> int:
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    copied = 0
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=s3_server.REGION,
        aws_access_key_id=s3_server.ACCESS_KEY,
        aws_secret_access_key=s3_server.SECRET_KEY,
    ) as s3:
        async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source):
            for item in page.get("Contents", []):
                await s3.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})
                copied += 1
    return copied


async def test_postgres_and_s3_backup_restores_into_a_fresh_broker(
    request: pytest.FixtureRequest, aiohttp_client: AiohttpClient, settings: Settings, tmp_path: Path
) -> None:
    production = await production_settings(settings, request)
    client = await aiohttp_client(create_app(production))
    sent = await send_every_kind(client)

    dump = tmp_path / "mesh.dump"
    pg_dump = pg_server.server_binary("pg_dump")
    await asyncio.to_thread(run, [pg_dump, "--format=custom", f"--file={dump}", production.database_url])
    admin_dsn = request.getfixturevalue("pg_admin_dsn")
    fresh_database = await pg_server.clone_database(admin_dsn, "template0")
    pg_restore = pg_server.server_binary("pg_restore")
    await asyncio.to_thread(run, [pg_restore, "--no-owner", f"--dbname={fresh_database}", str(dump)])

    endpoint = production.s3_endpoint_url
    source_bucket = production.blob_url.removeprefix("s3://").split("/")[0]
    fresh_bucket = await s3_server.create_bucket(endpoint)
    assert await copy_bucket(endpoint, source_bucket, fresh_bucket) >= 2
    await client.close()

    fresh = production.with_(
        database_url=fresh_database, blob_url=production.blob_url.replace(source_bucket, fresh_bucket, 1)
    )
    restored = await aiohttp_client(create_app(fresh))
    assert await received(restored) == sent
