"""The write-behind execution log loses nothing when its writer is cancelled mid-write."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.roles import Role
from controller.sessions.history import ExecutionLog
from controller.store.db import Database
from controller.store.sessions import SessionRecord, SessionsRepo
from controller.store.users import UsersRepo


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "o16n.db")
    yield db
    await db.close()


async def add_session(db: Database, repo: SessionsRepo) -> None:
    """Session "s" of a new user, for the log to write entries of."""
    user = await UsersRepo(db).add("ada", "not-a-hash", Role.CONTRIBUTOR)
    await repo.insert(
        SessionRecord("s", "n", user.id, user.username, "python", "k", "c", "alive", None, 0, 0, "")
    )


class SlowRepo(SessionsRepo):
    """Holds the first write until the test cancels it."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.started = asyncio.Event()
        self.hold = True

    async def record_executions(self, entries: list[tuple[str, int, str, str]]) -> None:
        if self.hold:
            self.hold = False
            self.started.set()
            await asyncio.sleep(3600)
        await super().record_executions(entries)


async def test_a_cancelled_write_is_written_by_the_next_flush(db: Database) -> None:
    repo = SlowRepo(db)
    await add_session(db, repo)
    log = ExecutionLog(repo)
    writer = asyncio.create_task(log.run())
    log.record("s", 1, "x = 1", "")
    await repo.started.wait()
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)

    await log.flush()  # what shutdown does
    assert await repo.history("s") == ["x = 1"]


class LockedOnceRepo(SessionsRepo):
    """The first write fails as a locked database would."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.failed = False

    async def record_executions(self, entries: list[tuple[str, int, str, str]]) -> None:
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database is locked")
        await super().record_executions(entries)


async def test_a_failed_write_is_retried(db: Database) -> None:
    repo = LockedOnceRepo(db)
    await add_session(db, repo)
    log = ExecutionLog(repo)
    writer = asyncio.create_task(log.run())
    try:
        log.record("s", 1, "x = 1", "")
        for _ in range(50):  # the retry comes a second after the failure
            await asyncio.sleep(0.1)
            if await repo.history("s"):
                break
        assert repo.failed and await repo.history("s") == ["x = 1"]
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
