"""The SQLite wrapper: transactions end whatever happens, the data directory is private."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from controller.store.db import Database


async def test_a_failed_commit_rolls_back_and_the_connection_goes_on(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "o16n.db")
    try:
        await db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await db.execute(
            "CREATE TABLE child (parent_id INTEGER"
            " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
        with pytest.raises(sqlite3.IntegrityError):  # checked at COMMIT
            await db.execute("INSERT INTO child VALUES (1)")
        await db.execute("INSERT INTO parent VALUES (1)")
        assert await db.fetchall("SELECT * FROM child") == []
        assert len(await db.fetchall("SELECT * FROM parent")) == 1
    finally:
        await db.close()


async def test_the_data_directory_is_created_private(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "data" / "o16n.db")
    await db.close()
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


async def test_an_acknowledged_commit_is_on_disk(tmp_path: Path) -> None:
    """synchronous=FULL: with WAL, NORMAL acknowledges commits a power loss can roll back."""
    db = await Database.open(tmp_path / "o16n.db")
    try:
        row = await db.fetchone("PRAGMA synchronous")
        assert row is not None and row[0] == 2  # FULL
        row = await db.fetchone("PRAGMA journal_mode")
        assert row is not None and row[0] == "wal"
    finally:
        await db.close()
