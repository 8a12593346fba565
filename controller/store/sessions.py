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
    #: the instance of the controller of the group that holds it (``None``: a row from
    #: before groups, held by the one controller there was)
    controller: str | None = None
    #: where the session's agent dials (the controller that made it listened there)
    endpoint: str | None = None
    #: the instance whose label its container carries: the one that made it
    origin: str | None = None

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
            controller=row["controller"],
            endpoint=row["endpoint"],
            origin=row["origin"],
        )


_SELECT = "SELECT s.*, u.username FROM sessions s JOIN users u ON u.id = s.owner_id"


class SessionsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, record: SessionRecord, limit: int) -> bool:
        """Add an alive session, unless its owner has ``limit`` alive sessions already,
        on any controller of the group (checked under the write lock, so controllers
        creating sessions at once never pass it together); whether it was added."""
        async with self._db.transaction("session-insert") as conn:
            cur = await conn.execute(
                "SELECT COUNT(*) FROM sessions WHERE owner_id = ? AND state = 'alive'",
                (record.owner_id,),
            )
            row = await cur.fetchone()
            if row is not None and int(row[0]) >= limit:
                return False
            await conn.execute(
                "INSERT INTO sessions (id, name, owner_id, runtime, container_key, container_id,"
                " state, created_at, last_used_at, controller, endpoint, origin)"
                " VALUES (?, ?, ?, ?, ?, ?, 'alive', ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.owner_id,
                    record.runtime,
                    record.container_key,
                    record.container_id,
                    record.created_at,
                    record.last_used_at,
                    record.controller,
                    record.endpoint,
                    record.origin,
                ),
            )
        return True

    async def alive(self, controller: str) -> list[SessionRecord]:
        """The alive sessions ``controller`` holds (and those of before groups)."""
        rows = await self._db.fetchall(
            _SELECT + " WHERE s.state = 'alive' AND (s.controller = ? OR s.controller IS NULL)",
            (controller,),
        )
        return [SessionRecord.from_row(r) for r in rows]

    async def claim(self, session_ids: list[str], controller: str) -> None:
        """Name ``controller`` as the holder (and the maker) of rows from before groups it
        adopted, so that the group can forward to it and take them over."""
        async with self._db.transaction("session-claim") as conn:
            await conn.executemany(
                "UPDATE sessions SET controller = ?, origin = COALESCE(origin, ?)"
                " WHERE id = ? AND controller IS NULL",
                [(controller, controller, sid) for sid in session_ids],
            )

    async def hand_back(self, session_ids: list[str], dead: str, heir: str) -> None:
        """Undo part of ``take_over``: these sessions name ``dead`` again (the heir could
        not adopt them), for another round or another controller to take over."""
        async with self._db.transaction("session-hand-back") as conn:
            await conn.executemany(
                "UPDATE sessions SET controller = ? WHERE id = ? AND controller = ?",
                [(dead, sid, heir) for sid in session_ids],
            )

    async def get(self, session_id: str) -> SessionRecord | None:
        row = await self._db.fetchone(_SELECT + " WHERE s.id = ?", (session_id,))
        return SessionRecord.from_row(row) if row else None

    async def everyone_alive(self) -> list[SessionRecord]:
        rows = await self._db.fetchall(_SELECT + " WHERE s.state = 'alive' ORDER BY s.created_at")
        return [SessionRecord.from_row(r) for r in rows]

    async def alive_of(self, owner_id: int) -> list[SessionRecord]:
        """An owner's alive sessions, on every controller of the group, oldest first."""
        rows = await self._db.fetchall(
            _SELECT + " WHERE s.owner_id = ? AND s.state = 'alive' ORDER BY s.created_at",
            (owner_id,),
        )
        return [SessionRecord.from_row(r) for r in rows]

    async def held_elsewhere(self, controller: str) -> set[str]:
        """The container keys of alive sessions other controllers hold: a controller that
        made a container and died may have had it taken over (``take_over``)."""
        rows = await self._db.fetchall(
            "SELECT container_key FROM sessions WHERE state = 'alive' AND controller <> ?",
            (controller,),
        )
        return {r["container_key"] for r in rows}

    async def alive_keys(self) -> set[str]:
        """The container keys of every alive session, whoever holds it."""
        rows = await self._db.fetchall("SELECT container_key FROM sessions WHERE state = 'alive'")
        return {r["container_key"] for r in rows}

    async def alive_controller(self, name: str, now: float) -> bool:
        """Whether a controller of that instance has a row whose heartbeat lasts beyond ``now``."""
        row = await self._db.fetchone(
            "SELECT 1 FROM controllers WHERE name = ? AND expires_at > ?", (name, now)
        )
        return row is not None

    async def orphaned(self, now: float) -> list[str]:
        """The controllers that hold alive sessions and are not alive (no row of theirs
        whose heartbeat lasts beyond ``now``)."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT s.controller FROM sessions s WHERE s.state = 'alive'"
            " AND s.controller IS NOT NULL AND NOT EXISTS (SELECT 1 FROM controllers c"
            " WHERE c.name = s.controller AND c.expires_at > ?)",
            (now,),
        )
        return [r["controller"] for r in rows]

    async def take_over(self, dead: str, heir: str, now: float) -> list[SessionRecord]:
        """Move the alive sessions of ``dead`` to ``heir``, if ``dead`` is still not alive
        at ``now`` (one transaction under the write lock: two controllers taking over
        at once never both get a session); the sessions moved, as they were."""
        async with self._db.transaction("session-take-over") as conn:
            cur = await conn.execute(
                "SELECT 1 FROM controllers WHERE name = ? AND expires_at > ?", (dead, now)
            )
            if await cur.fetchone() is not None:
                return []
            cur = await conn.execute(
                _SELECT + " WHERE s.state = 'alive' AND s.controller = ?", (dead,)
            )
            moved = [SessionRecord.from_row(r) for r in await cur.fetchall()]
            await conn.execute(
                "UPDATE sessions SET controller = ? WHERE state = 'alive' AND controller = ?",
                (heir, dead),
            )
        return moved

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
