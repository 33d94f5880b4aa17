"""MESH_SQLITE_CACHE_MIB: the page cache of each connection to the embedded store (2 MiB by default; a larger one
only grows the broker's private memory, benchmarks/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.backends import metadata_store
from broker.settings import Settings, SettingsError
from broker.store.sqlite import SqliteStore


def test_the_default_is_two_mib_and_out_of_range_values_are_refused() -> None:
    assert Settings.from_env({}).sqlite_cache_mib == 2
    assert Settings.from_env({"MESH_SQLITE_CACHE_MIB": "64"}).sqlite_cache_mib == 64
    for raw in ("0", "-1", "5000"):
        with pytest.raises(SettingsError, match="MESH_SQLITE_CACHE_MIB"):
            Settings.from_env({"MESH_SQLITE_CACHE_MIB": raw})


@pytest.mark.parametrize("mib", [2, 16])
async def test_every_connection_has_the_cache_asked_for(tmp_path: Path, mib: int) -> None:
    store = metadata_store(Settings(data_dir=tmp_path, sqlite_cache_mib=mib))
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        # The inline (event loop) connection, and a reader thread's, answer the pragma as the connection sees it.
        inline = store._connections.lookup(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
        reader = await store._connections.read(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
        written = await store._connections.write(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
    finally:
        await store.close()
    assert inline == reader == written == -mib * 1024
