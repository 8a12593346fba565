"""What PostgreSQL refuses that SQLite takes: the store writes it anyway."""

from __future__ import annotations

import json
from pathlib import Path

from controller.roles import Role
from controller.store.batches import BatchesRepo
from controller.store.db import open_database
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
