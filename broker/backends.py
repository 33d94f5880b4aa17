"""A URL picks each backend: sqlite:///path or postgresql://..., and file:///dir or s3://bucket/prefix;
MESH_DEMOGRAPHICS picks the demographics source."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from broker.blobs.filesystem import FilesystemBlobStore
from broker.blobs.protocol import BlobStore
from broker.clock import SYSTEM_CLOCK, Clock
from broker.demographics.local import LocalDemographics
from broker.demographics.pds import PdsDemographics
from broker.demographics.protocol import Demographics
from broker.settings import Settings, SettingsError
from broker.store.protocol import MetadataStore
from broker.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from broker.store.pg_listener import ChannelListener


def database_url(settings: Settings) -> str:
    return settings.database_url or f"sqlite:///{settings.database_path.resolve()}"


def blob_url(settings: Settings) -> str:
    return settings.blob_url or f"file://{settings.blob_dir.resolve()}"


def metadata_store(settings: Settings) -> MetadataStore:
    url = database_url(settings)
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        return SqliteStore(Path(unquote(url[len("sqlite://") :])), cache_kib=settings.sqlite_cache_mib * 1024)
    if scheme in ("postgresql", "postgres"):
        _require("asyncpg", "postgres", "MESH_DATABASE_URL")
        from broker.store.postgres import PostgresStore

        return PostgresStore(
            url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            migrate=settings.db_migrate,
            directory_cache=settings.db_directory_cache,
        )
    raise SettingsError(f"MESH_DATABASE_URL must start with sqlite:/// or postgresql://, not {url!r}")


def arrivals_listener(settings: Settings, on_arrival: Callable[[str], None]) -> ChannelListener | None:
    """What tells a node of arrivals at every node (the long-poll inbox): PostgreSQL's LISTEN/NOTIFY; None for
    SQLite, where long polls also look at the store every MESH_INBOX_WAIT_POLL_SECONDS."""
    url = database_url(settings)
    if urlparse(url).scheme not in ("postgresql", "postgres"):
        return None
    from broker.store.pg_arrivals import listen_for_arrivals

    return listen_for_arrivals(url, on_arrival)


def blob_store(settings: Settings) -> BlobStore:
    url = blob_url(settings)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FilesystemBlobStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        _require("aiobotocore", "s3", "MESH_BLOB_URL")
        from broker.blobs.s3 import S3BlobStore

        return S3BlobStore.from_url(
            url,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            max_attempts=settings.s3_max_attempts,
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_read_timeout_seconds,
        )
    raise SettingsError(f"MESH_BLOB_URL must start with file:/// or s3://, not {url!r}")


def demographics(settings: Settings, store: MetadataStore, clock: Clock = SYSTEM_CLOCK) -> Demographics:
    """MESH_DEMOGRAPHICS picks where GP routing traces patients: the local directory or a PDS FHIR endpoint."""
    if settings.demographics == "pds":
        return PdsDemographics(
            settings.pds_url,
            timeout_seconds=settings.pds_timeout_seconds,
            retries=settings.pds_retries,
            cache_seconds=settings.pds_cache_seconds,
            api_key=settings.pds_api_key,
            bearer_token=settings.pds_bearer_token,
            clock=clock,
        )
    return LocalDemographics(store)


def _require(module: str, extra: str, variable: str) -> None:
    """Fail at start-up, naming the install command, when an optional backend's driver is missing."""
    if importlib.util.find_spec(module) is None:
        raise SettingsError(f"{variable} needs {module}, which is not installed: pip install 'mesh-broker[{extra}]'")
