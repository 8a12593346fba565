"""Repository of sessions and their execution history."""

from __future__ import annotations

import time
from dataclasses import dataclass

from controller.store.db import Database, Row


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    name: str
    owner_id: int
    owner_name: str
    runtime: str
    container_key: str
    container_id: str
    state: str
    dead_reason: str | None
    created_at: float
    last_used_at: float
    console_output: str

    @classmethod
    def from_row(cls, row: Row) -> SessionRecord:
        return cls(
            id=row["id"],
            name=row["name"],
            owner_id=row["owner_id"],
            owner_name=row["username"],
            runtime=row["runtime"],
            container_key=row["container_key"],
            container_id=row["container_id"],
            state=row["state"],
            dead_reason=row["dead_reason"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            console_output=row["console_output"],
        )


_SELECT = "SELECT s.*, u.username FROM sessions s JOIN users u ON u.id = s.owner_id"


class SessionsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, record: SessionRecord) -> None:
        await self._db.execute(
            "INSERT INTO sessions (id, name, owner_id, runtime, container_key, container_id,"
            " state, created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, 'alive', ?, ?)",
            (
                record.id,
                record.name,
                record.owner_id,
                record.runtime,
                record.container_key,
                record.container_id,
                record.created_at,
                record.last_used_at,
            ),
        )

    async def alive(self) -> list[SessionRecord]:
        rows = await self._db.fetchall(_SELECT + " WHERE s.state = 'alive'")
        return [SessionRecord.from_row(r) for r in rows]

    async def dead(self) -> list[SessionRecord]:
        rows = await self._db.fetchall(_SELECT + " WHERE s.state = 'dead'")
        return [SessionRecord.from_row(r) for r in rows]

    async def mark_dead(self, session_id: str, reason: str) -> None:
        await self._db.execute(
            "UPDATE sessions SET state = 'dead', dead_reason = ? WHERE id = ?",
            (reason, session_id),
        )

    async def delete(self, session_id: str) -> None:
        await self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    async def purge_dead(self, older_than: float) -> int:
        return await self._db.execute(
            "DELETE FROM sessions WHERE state = 'dead' AND last_used_at < ?", (older_than,)
        )

    async def record_executions(self, entries: list[tuple[str, int, str, str]]) -> None:
        """Append executions to the history and keep each session's latest console output,
        in one transaction."""
        now = time.time()
        latest = {session_id: console for session_id, _, _, console in entries}
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO session_history (session_id, seq, code, executed_at)"
                " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?)"
                " ON CONFLICT DO NOTHING",
                [(sid, seq, code, now, sid) for sid, seq, code, _ in entries],
            )
            await conn.executemany(
                "UPDATE sessions SET console_output = ?, last_used_at = ? WHERE id = ?",
                [(console, now, sid) for sid, console in latest.items()],
            )

    async def history(self, session_id: str) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT code FROM session_history WHERE session_id = ? ORDER BY seq", (session_id,)
        )
        return [r["code"] for r in rows]

    async def history_length(self, session_id: str) -> int:
        row = await self._db.fetchone(
            "SELECT COALESCE(MAX(seq), 0) FROM session_history WHERE session_id = ?",
            (session_id,),
        )
        return int(row[0]) if row else 0
