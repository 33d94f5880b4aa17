"""A URL picks each backend; a missing optional driver fails with the install command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from broker import backends
from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.s3 import S3BlobStore
from broker.settings import Settings, SettingsError
from broker.store.postgres import PostgresStore
from broker.store.sqlite import SqliteStore


def test_embedded_default_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert isinstance(backends.metadata_store(settings), SqliteStore)
    assert isinstance(backends.blob_store(settings), FilesystemBlobStore)
    assert backends.database_url(settings) == f"sqlite:///{(tmp_path / 'mesh.sqlite3').resolve()}"
    assert backends.blob_url(settings) == f"file://{(tmp_path / 'blobs').resolve()}"


def test_urls_pick_postgres_and_s3() -> None:
    settings = Settings(database_url="postgresql://u:p@db:5432/mesh", blob_url="s3://bucket/prefix")
    assert isinstance(backends.metadata_store(settings), PostgresStore)
    assert isinstance(backends.blob_store(settings), S3BlobStore)


def test_the_directory_cache_can_be_turned_off_for_poolers_without_listen() -> None:
    settings = Settings.from_env({"MESH_DATABASE_URL": "postgresql://db/mesh", "MESH_DB_DIRECTORY_CACHE": "off"})
    assert settings.db_directory_cache is False
    store = backends.metadata_store(settings)
    assert isinstance(store, PostgresStore) and store.directory_listening() is None
    assert Settings().db_directory_cache is True


@pytest.mark.parametrize(
    ("field", "url", "variable"),
    [("database_url", "mysql://db/mesh", "MESH_DATABASE_URL"), ("blob_url", "gs://bucket", "MESH_BLOB_URL")],
)
def test_unknown_schemes_are_refused(field: str, url: str, variable: str) -> None:
    settings = Settings(**{field: url})
    with pytest.raises(SettingsError, match=variable):
        backends.metadata_store(settings) if field == "database_url" else backends.blob_store(settings)


@pytest.mark.parametrize(
    ("module", "settings", "extra"),
    [
        ("asyncpg", Settings(database_url="postgresql://db/mesh"), "postgres"),
        ("aiobotocore", Settings(blob_url="s3://bucket"), "s3"),
    ],
)
def test_missing_driver_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, module: str, settings: Settings, extra: str
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    with pytest.raises(SettingsError, match=rf"pip install 'mesh-broker\[{extra}\]'"):
        backends.metadata_store(settings) if extra == "postgres" else backends.blob_store(settings)


def test_event_loop_setting_is_validated() -> None:
    assert Settings.from_env({"MESH_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    assert Settings().event_loop == "uvloop"
    with pytest.raises(SettingsError, match="MESH_EVENT_LOOP"):
        Settings.from_env({"MESH_EVENT_LOOP": "trio"})
