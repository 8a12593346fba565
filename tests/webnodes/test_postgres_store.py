"""What PostgreSQL refuses that SQLite takes: the store writes it anyway."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from controller.roles import Role
from controller.store.batches import BatchesRepo
from controller.store.db import Database, open_database
from controller.store.group import ControllerRecord, GroupRepo
from controller.store.sessions import SessionRecord, SessionsRepo
from controller.store.users import UsersRepo
from tests.conftest import make_settings


async def test_a_nul_in_a_text_or_a_result_is_written_and_read(
    group_database: str, data_dir: Path
) -> None:
    """PostgreSQL text cannot hold NUL: code, a console output or a user name someone
    typed with one made every write of it fail (the history writer retried it for ever,
    the audit writer stopped); jsonb refuses \\u0000 in a batch result."""
    db = await open_database(make_settings(data_dir, database_url=group_database))
    try:
        user = await UsersRepo(db).add("a\x00b", "hash", Role.OWNER)
        sessions = SessionsRepo(db)
        record = SessionRecord(
            "s", "n", user.id, user.username, "python", "k", "c", "alive", None, 0, 0, ""
        )
        assert await sessions.insert(record, limit=5)
        await sessions.record_executions([("s", 1, "print('\x00')", "\x00\n")])
        assert await sessions.history("s") == ["print('\ufffd')"]

        await db.execute(
            "INSERT INTO services (name, version, key, publisher_id, created_at, creation_time,"
            " runtime, code, inputs, outputs, output_files, image)"
            " VALUES ('v', '1', 'k', ?, 0, '', 'python', 'y=1', '[]', '[]', '[]', 'i')",
            (user.id,),
        )
        await db.execute(
            "INSERT INTO batches (id, service_name, service_version, owner_id, parallel_count,"
            " state, total, created_at) VALUES ('b', 'v', '1', ?, 1, 'Pending', 1, 0)",
            (user.id,),
        )
        await db.execute("INSERT INTO batch_items (batch_id, idx, input) VALUES ('b', 0, '{}')")
        batches = BatchesRepo(db)
        result = {"outputParameters": {"s": "a\x00"}, "outputFiles": {"f": "QUJD"}}
        await batches.save_results("b", [(0, result)])
        assert await batches.result_file("b", 0, "f") == "QUJD"
        assert json.dumps(await batches.result("b", 0))
    finally:
        await db.close()


async def holding_the_lock(db: Database, seconds: float) -> asyncio.Task[None]:
    """Another controller's long write transaction, under way when this returns."""
    holding = asyncio.Event()

    async def long_write() -> None:
        async with db.transaction() as conn:
            await conn.execute("UPDATE users SET role = role")
            holding.set()
            await asyncio.sleep(seconds)

    writer = asyncio.create_task(long_write())
    await holding.wait()
    return writer


async def test_a_heartbeat_does_not_wait_behind_a_long_write(
    group_database: str, data_dir: Path
) -> None:
    """Every write queues behind the group's write lock, but a heartbeat or a lease is one
    atomic statement: a long unit of work elsewhere must not make a live controller look
    dead to the others."""
    db = await open_database(make_settings(data_dir, database_url=group_database))
    other = await open_database(make_settings(data_dir, database_url=group_database))
    try:
        repo = GroupRepo(db)
        await repo.register(ControllerRecord("A", "a", "http://a:1", 0.0, 0.0, 10.0))
        writer = await holding_the_lock(other, seconds=3)
        started = time.monotonic()
        assert await repo.heartbeat("A", 1.0, 10.0)
        assert await repo.try_lease("purges", "A", 1.0, 10.0)
        assert time.monotonic() - started < 1.5
        await writer
    finally:
        await db.close()
        await other.close()


async def test_a_heartbeat_gets_a_connection_when_writers_hold_every_other(
    group_database: str, data_dir: Path
) -> None:
    """Writers queued behind another controller's long transaction hold every connection
    of the pool while they wait for the lock: a heartbeat has connections of its own."""
    settings = make_settings(data_dir, database_url=group_database, database_pool_size=2)
    db = await open_database(settings)
    other = await open_database(settings)
    try:
        repo = GroupRepo(db)
        await repo.register(ControllerRecord("A", "a", "http://a:1", 0.0, 0.0, 10.0))
        writer = await holding_the_lock(other, seconds=3)
        queued = [  # every connection of this controller's pool, waiting for the lock
            asyncio.create_task(db.execute("UPDATE users SET role = role")) for _ in range(2)
        ]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert await repo.heartbeat("A", 1.0, 10.0)
        assert time.monotonic() - started < 1.5
        await asyncio.gather(writer, *queued)
    finally:
        await db.close()
        await other.close()
