"""Repository of the audit trail: append-only (rows are inserted, and purged when older
than the retention; nothing updates them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from controller.store.db import Database, Row


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    actor: str
    address: str
    action: str
    target: str
    outcome: str
    status: int | None = None
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @classmethod
    def from_row(cls, row: Row) -> AuditEntry:
        return cls(
            id=row["id"],
            at=row["at"],
            actor=row["actor"],
            address=row["address"],
            action=row["action"],
            target=row["target"],
            outcome=row["outcome"],
            status=row["status"],
            request_id=row["request_id"],
            detail=json.loads(row["detail"]),
        )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: float | None = None
    until: float | None = None
    actor: str | None = None
    action: str | None = None  # exact, or a prefix when it ends with '*'
    before_id: int | None = None  # the cursor: entries older than this one
    limit: int = 100


_INSERT = (
    "INSERT INTO audit (at, actor, address, action, target, outcome, status, request_id,"
    " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class AuditRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, entries: list[AuditEntry]) -> None:
        """Insert entries, in one transaction."""
        if not entries:
            return
        async with self._db.transaction() as conn:
            await conn.executemany(
                _INSERT,
                [
                    (
                        e.at,
                        e.actor,
                        e.address,
                        e.action,
                        e.target,
                        e.outcome,
                        e.status,
                        e.request_id,
                        json.dumps(e.detail, sort_keys=True),
                    )
                    for e in entries
                ],
            )

    async def page(self, query: AuditQuery) -> list[AuditEntry]:
        """Entries matching ``query``, newest first, at most ``limit``."""
        where: list[str] = []
        params: list[object] = []
        if query.since is not None:
            where.append("at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("at < ?")
            params.append(query.until)
        if query.actor is not None:
            where.append("actor = ?")
            params.append(query.actor)
        if query.action is not None:
            if query.action.endswith("*"):
                where.append("substr(action, 1, CAST(? AS INTEGER)) = ?")
                prefix = query.action[:-1]
                params.extend([len(prefix), prefix])
            else:
                where.append("action = ?")
                params.append(query.action)
        if query.before_id is not None:
            where.append("id < ?")
            params.append(query.before_id)
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = await self._db.fetchall(sql, (*params, query.limit))
        return [AuditEntry.from_row(r) for r in rows]

    async def purge(self, older_than: float) -> int:
        return await self._db.execute("DELETE FROM audit WHERE at < ?", (older_than,))

    async def count(self) -> int:
        row = await self._db.fetchone("SELECT COUNT(*) FROM audit")
        return int(row[0]) if row else 0
