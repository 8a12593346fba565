"""The write-behind execution log loses nothing when its writer is cancelled mid-write."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from controller.auth.roles import Role
from controller.sessions.history import ExecutionLog
from controller.store.db import Database
from controller.store.sessions import SessionRecord, SessionsRepo
from controller.store.users import UsersRepo


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


async def test_a_cancelled_write_is_written_by_the_next_flush(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "o16n.db")
    try:
        user = await UsersRepo(db).add("ada", "not-a-hash", Role.CONTRIBUTOR)
        repo = SlowRepo(db)
        await repo.insert(
            SessionRecord(
                "s", "n", user.id, user.username, "python", "k", "c", "alive", None, 0, 0, ""
            )
        )
        log = ExecutionLog(repo)
        writer = asyncio.create_task(log.run())
        log.record("s", 1, "x = 1", "")
        await repo.started.wait()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

        await log.flush()  # what shutdown does
        assert await repo.history("s") == ["x = 1"]
    finally:
        await db.close()


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


async def test_a_failed_write_is_retried(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "o16n.db")
    writer = None
    try:
        user = await UsersRepo(db).add("ada", "not-a-hash", Role.CONTRIBUTOR)
        repo = LockedOnceRepo(db)
        await repo.insert(
            SessionRecord(
                "s", "n", user.id, user.username, "python", "k", "c", "alive", None, 0, 0, ""
            )
        )
        log = ExecutionLog(repo)
        writer = asyncio.create_task(log.run())
        log.record("s", 1, "x = 1", "")
        for _ in range(50):  # the retry comes a second after the failure
            await asyncio.sleep(0.1)
            if await repo.history("s"):
                break
        assert repo.failed and await repo.history("s") == ["x = 1"]
    finally:
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        await db.close()
