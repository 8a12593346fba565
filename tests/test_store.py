"""The store's database: transactions end whatever happens (on either store); SQLite's own
file is private, durable, and migrated from the schemas o16n wrote before."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import psycopg
import pytest

from controller.store.db import open_database
from controller.store.sqlite import SqliteDatabase
from tests.conftest import make_settings


async def test_a_failed_commit_rolls_back_and_the_connection_goes_on(tmp_path: Path) -> None:
    db = await open_database(make_settings(tmp_path))
    try:
        await db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        await db.execute(
            "CREATE TABLE child (parent_id INTEGER"
            " REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
        with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):  # at COMMIT
            await db.execute("INSERT INTO child VALUES (1)")
        await db.execute("INSERT INTO parent VALUES (1)")
        assert await db.fetchall("SELECT * FROM child") == []
        assert len(await db.fetchall("SELECT * FROM parent")) == 1
    finally:
        await db.close()


@pytest.mark.sqlite_only
async def test_the_data_directory_is_created_private(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "data" / "o16n.db")
    await db.close()
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


@pytest.mark.sqlite_only
async def test_an_acknowledged_commit_is_on_disk(tmp_path: Path) -> None:
    """synchronous=FULL: with WAL, NORMAL acknowledges commits a power loss can roll back."""
    db = await SqliteDatabase.open(tmp_path / "o16n.db")
    try:
        row = await db.fetchone("PRAGMA synchronous")
        assert row is not None and row[0] == 2  # FULL
        row = await db.fetchone("PRAGMA journal_mode")
        assert row is not None and row[0] == "wal"
    finally:
        await db.close()


@pytest.mark.sqlite_only
async def test_a_database_from_before_directory_users_keeps_its_users_local(
    tmp_path: Path,
) -> None:
    """Migration 7 (directory users) on a database of schema 6, as o16n wrote it before:
    its accounts stay local ones, passwords and roles kept, and a directory user cannot
    take over one of their names."""
    from controller.errors import ConflictError
    from controller.roles import Role
    from controller.store.schema import MIGRATIONS
    from controller.store.users import UsersRepo

    path = tmp_path / "o16n.db"
    old = sqlite3.connect(path)
    for version, script in enumerate(MIGRATIONS[:6], start=1):
        old.executescript(script)
        old.execute(f"PRAGMA user_version = {version}")
    old.execute(
        "INSERT INTO users (username, password_hash, role, disabled, created_at, updated_at)"
        " VALUES ('alice', 'argon2-hash', 'Owner', 0, 1, 1), ('bob', 'h', 'Reader', 1, 1, 1)"
    )
    old.commit()
    old.close()

    db = await SqliteDatabase.open(path)
    try:
        row = await db.fetchone("PRAGMA user_version")
        assert row is not None and row[0] == len(MIGRATIONS)
        users = {u.username: u for u in await UsersRepo(db).all()}
        assert {n: (u.source, u.role, u.disabled) for n, u in users.items()} == {
            "alice": ("local", Role.OWNER, False),
            "bob": ("local", Role.READER, True),
        }
        assert users["alice"].password_hash == "argon2-hash" and users["alice"].is_local
        with pytest.raises(ConflictError):
            await UsersRepo(db).sync_directory_user(
                "ldap",
                "alice@corp",
                "alice",
                Role.OWNER,
                display_name=None,
                email=None,
                disabled=False,
                checked_at=2.0,
            )
    finally:
        await db.close()
