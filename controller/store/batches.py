"""Repository of batch executions and their items (inputs and results as JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controller.store.db import Database, Row


@dataclass(slots=True)
class BatchRecord:
    id: str
    service_name: str
    service_version: str
    owner_id: int
    parallel_count: int
    state: str
    total: int
    completed: int
    deleted: bool
    error: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: Row) -> BatchRecord:
        return cls(
            id=row["id"],
            service_name=row["service_name"],
            service_version=row["service_version"],
            owner_id=row["owner_id"],
            parallel_count=row["parallel_count"],
            state=row["state"],
            total=row["total"],
            completed=row["completed"],
            deleted=bool(row["deleted"]),
            error=row["error"],
            created_at=row["created_at"],
        )


class BatchesRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, record: BatchRecord, inputs: list[dict[str, Any]]) -> None:
        """The batch and all its items, in one transaction."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO batches (id, service_name, service_version, owner_id,"
                " parallel_count, state, total, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.service_name,
                    record.service_version,
                    record.owner_id,
                    record.parallel_count,
                    record.state,
                    record.total,
                    record.created_at,
                ),
            )
            await conn.executemany(
                "INSERT INTO batch_items (batch_id, idx, input) VALUES (?, ?, ?)",
                ((record.id, i, json.dumps(item)) for i, item in enumerate(inputs)),
            )

    async def get(self, batch_id: str) -> BatchRecord | None:
        row = await self._db.fetchone("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return BatchRecord.from_row(row) if row else None

    async def ids(self, name: str, version: str, owner_id: int) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT id FROM batches WHERE service_name = ? AND service_version = ?"
            " AND owner_id = ? AND deleted = 0 ORDER BY created_at",
            (name, version, owner_id),
        )
        return [r["id"] for r in rows]

    async def unfinished(self) -> list[BatchRecord]:
        rows = await self._db.fetchall(
            "SELECT * FROM batches WHERE state IN ('Pending', 'InProgress') AND deleted = 0"
            " ORDER BY created_at"
        )
        return [BatchRecord.from_row(r) for r in rows]

    async def count_by_state(self) -> dict[str, int]:
        """How many batches (not deleted) are in each state, for ``/metrics``."""
        rows = await self._db.fetchall(
            "SELECT state, COUNT(*) AS n FROM batches WHERE deleted = 0 GROUP BY state"
        )
        return {str(r["state"]): int(r["n"]) for r in rows}

    async def pending_items(self, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        rows = await self._db.fetchall(
            "SELECT idx, input FROM batch_items WHERE batch_id = ? AND result IS NULL ORDER BY idx",
            (batch_id,),
        )
        return [(r["idx"], json.loads(r["input"])) for r in rows]

    async def results(self, batch_id: str) -> list[Any]:
        """Every item's result in submission order; ``None`` where not finished."""
        rows = await self._db.fetchall(
            "SELECT result FROM batch_items WHERE batch_id = ? ORDER BY idx", (batch_id,)
        )
        return [json.loads(r["result"]) if r["result"] is not None else None for r in rows]

    async def result(self, batch_id: str, index: int) -> Any:
        row = await self._db.fetchone(
            "SELECT result FROM batch_items WHERE batch_id = ? AND idx = ?", (batch_id, index)
        )
        if row is None:
            raise KeyError(index)
        return json.loads(row["result"]) if row["result"] is not None else None

    async def result_file(self, batch_id: str, index: int, name: str) -> str | None:
        """One output file (base64) of an item's result, without reading the rest of the
        result (other files) out of the database; ``None`` when there is no such file."""
        if self._db.dialect == "postgres":
            # parsed here: PostgreSQL's json operators refuse a \u0000 anywhere in the
            # result (a NUL in an output parameter), and a result is bounded in size
            row = await self._db.fetchone(
                "SELECT result FROM batch_items WHERE batch_id = ? AND idx = ?", (batch_id, index)
            )
            if row is None:
                raise KeyError(index)
            files = json.loads(row["result"]).get("outputFiles") if row["result"] else None
            data = files.get(name) if isinstance(files, dict) else None
            return data if isinstance(data, str) else None
        row = await self._db.fetchone(
            "SELECT (SELECT value FROM json_each(result, '$.outputFiles') WHERE key = ?)"
            " AS data FROM batch_items WHERE batch_id = ? AND idx = ?",
            (name, batch_id, index),
        )
        if row is None:
            raise KeyError(index)
        data = row["data"]
        return data if isinstance(data, str) else None

    async def save_results(self, batch_id: str, results: Iterable[tuple[int, Any]]) -> None:
        """Store finished items and advance the batch's count, in one transaction."""
        items = [(json.dumps(result), batch_id, idx) for idx, result in results]
        async with self._db.transaction() as conn:
            cur = await conn.executemany(
                "UPDATE batch_items SET result = ? WHERE batch_id = ? AND idx = ?"
                " AND result IS NULL",
                items,
            )
            # rowcount after executemany is the total: count only what was new (not a
            # recount of the whole batch, which grew with the square of its size)
            await conn.execute(
                "UPDATE batches SET completed = completed + ? WHERE id = ?",
                (cur.rowcount, batch_id),
            )

    async def start(self, batch_id: str) -> bool:
        """Mark a batch running, unless it ended meanwhile (finished, failed, cancelled:
        read as unfinished a moment before, by the group's batch runner, say); whether it
        is to run."""
        count = await self._db.execute(
            "UPDATE batches SET state = 'InProgress' WHERE id = ? AND deleted = 0"
            " AND state IN ('Pending', 'InProgress')",
            (batch_id,),
        )
        return count == 1

    async def set_state(self, batch_id: str, state: str, error: str | None = None) -> None:
        finished = time.time() if state in ("Complete", "Failed", "Canceled") else None
        await self._db.execute(
            # a batch cancelled meanwhile (on another controller, say) stays cancelled
            "UPDATE batches SET state = ?, error = ?, finished_at = ? WHERE id = ? AND deleted = 0",
            (state, error, finished, batch_id),
        )

    async def delete(self, batch_id: str, state: str) -> None:
        """Forget a batch's items; keep a tombstone so that a second DELETE is still 200."""
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM batch_items WHERE batch_id = ?", (batch_id,))
            await conn.execute(
                "UPDATE batches SET deleted = 1, state = ?, finished_at = ? WHERE id = ?",
                (state, time.time(), batch_id),
            )
