"""MESH_S3_MAX_ATTEMPTS and the S3 timeouts: read once, checked at start, handed to the S3 blob store."""

from __future__ import annotations

import pytest

from broker import backends
from broker.blobs.s3 import S3BlobStore
from broker.settings import Settings, SettingsError


def test_defaults_and_environment() -> None:
    assert (Settings().s3_max_attempts, Settings().s3_connect_timeout_seconds, Settings().s3_read_timeout_seconds) == (
        3,
        5.0,
        30.0,
    )
    settings = Settings.from_env(
        {"MESH_S3_MAX_ATTEMPTS": "5", "MESH_S3_CONNECT_TIMEOUT_SECONDS": "1.5", "MESH_S3_READ_TIMEOUT_SECONDS": "10"}
    )
    assert (settings.s3_max_attempts, settings.s3_connect_timeout_seconds, settings.s3_read_timeout_seconds) == (
        5,
        1.5,
        10.0,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("MESH_S3_MAX_ATTEMPTS", "0", "MESH_S3_MAX_ATTEMPTS must be between 1 and 10"),
        ("MESH_S3_MAX_ATTEMPTS", "11", "MESH_S3_MAX_ATTEMPTS must be between 1 and 10"),
        ("MESH_S3_MAX_ATTEMPTS", "three", "MESH_S3_MAX_ATTEMPTS must be a whole number"),
        ("MESH_S3_CONNECT_TIMEOUT_SECONDS", "0", "must be positive"),
        ("MESH_S3_READ_TIMEOUT_SECONDS", "-1", "must be positive"),
    ],
)
def test_invalid_values_are_refused_at_start(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_env({name: value})


def test_the_s3_store_is_built_with_them() -> None:
    settings = Settings(
        blob_url="s3://bucket/prefix", s3_max_attempts=7, s3_connect_timeout_seconds=2, s3_read_timeout_seconds=9
    )
    store = backends.blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert (store.max_attempts, store.connect_timeout, store.read_timeout) == (7, 2, 9)
