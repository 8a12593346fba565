"""The write-behind execution log loses nothing when its writer is cancelled mid-write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.errors import StoreBusy
from controller.roles import Role
from controller.sessions import history
from controller.sessions.history import ExecutionLog
from controller.store.db import Database, open_database
from controller.store.sessions import SessionRecord, SessionsRepo
from controller.store.users import UsersRepo
from tests.conftest import make_settings


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_database(make_settings(tmp_path))
    yield db
    await db.close()


async def add_session(db: Database, repo: SessionsRepo) -> None:
    """Session "s" of a new user, for the log to write entries of."""
    user = await UsersRepo(db).add("ada", "not-a-hash", Role.CONTRIBUTOR)
    await repo.insert(
        SessionRecord(
            "s", "n", user.id, user.username, "python", "k", "c", "alive", None, 0, 0, ""
        ),
        limit=10,
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
    """The first write fails as a busy (locked) database does, on either store."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.failed = False

    async def record_executions(self, entries: list[tuple[str, int, str, str]]) -> None:
        if not self.failed:
            self.failed = True
            raise StoreBusy("the database is busy; try again shortly")
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


class CountingRepo(SessionsRepo):
    """Counts the transactions that write executions."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.writes = 0

    async def record_executions(self, entries: list[tuple[str, int, str, str]]) -> None:
        self.writes += 1
        await super().record_executions(entries)


async def test_executions_in_a_row_are_written_in_one_transaction(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One SQLite transaction per execution was a fifth of the controller's CPU per
    ``execute``: entries wait ``FLUSH_DELAY`` for others (here for good, so that no timing
    counts), and the log says how far each followed session's history is written (its
    agent keeps the rest)."""
    monkeypatch.setattr(history, "FLUSH_DELAY", 3600.0)
    repo = CountingRepo(db)
    await add_session(db, repo)
    log = ExecutionLog(repo)
    log.follow("s")
    writer = asyncio.create_task(log.run())
    try:
        for seq in range(1, 6):
            log.record("s", seq, f"x = {seq}", "")
            await asyncio.sleep(0)  # the writer runs between them, as between requests
        assert repo.writes == 0 and log.written("s") == 0
        await log.flush()  # what the writer does once the delay is over
        assert repo.writes == 1 and log.written("s") == 5
        assert await repo.history("s") == [f"x = {seq}" for seq in range(1, 6)]
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
    log.forget("s")
    log.record("s", 6, "x = 6", "")
    await log.flush()
    assert log.written("s") == 0  # not followed any more: not counted
