"""Repository of the compute nodes (``/computenodes``): normalised engine addresses, in
the order they were configured, with who added each and when. Every change is one
transaction and returns the list as it was before, so a caller can put it back."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from controller.store.db import Connection, Database, Row


@dataclass(frozen=True, slots=True)
class StoredNode:
    entry: str
    added_at: float
    added_by: str

    @classmethod
    def from_row(cls, row: Row) -> StoredNode:
        return cls(entry=row["entry"], added_at=row["added_at"], added_by=row["added_by"])


_SELECT = "SELECT entry, added_at, added_by FROM compute_nodes ORDER BY position"
_INSERT = "INSERT INTO compute_nodes (entry, position, added_at, added_by) VALUES (?, ?, ?, ?)"


async def _all(conn: Connection) -> list[StoredNode]:
    cursor = await conn.execute(_SELECT)
    return [StoredNode.from_row(r) for r in await cursor.fetchall()]


async def _write(conn: Connection, nodes: Iterable[StoredNode]) -> None:
    await conn.execute("DELETE FROM compute_nodes")
    await conn.executemany(
        _INSERT, [(n.entry, i, n.added_at, n.added_by) for i, n in enumerate(nodes)]
    )


class NodesRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def nodes(self) -> list[StoredNode]:
        rows = await self._db.fetchall(_SELECT)
        return [StoredNode.from_row(r) for r in rows]

    async def changes(self) -> int:
        """Changes when another controller of the group (or a CLI) changed the list."""
        return await self._db.changes("nodes")

    async def entries(self) -> list[str]:
        return [n.entry for n in await self.nodes()]

    async def replace(self, entries: list[str], added_by: str) -> list[StoredNode]:
        """Make ``entries`` the list, in that order (an entry already there keeps when and
        by whom it was added); returns the list before."""
        async with self._db.transaction() as conn:
            before = await _all(conn)
            kept = {n.entry: n for n in before}
            now = time.time()
            await _write(conn, [kept.get(e) or StoredNode(e, now, added_by) for e in entries])
            return before

    async def add(self, entries: list[str], added_by: str) -> list[StoredNode]:
        """Append the entries not in the list yet; returns the list before."""
        async with self._db.transaction() as conn:
            before = await _all(conn)
            known = {n.entry for n in before}
            now = time.time()
            new = [StoredNode(e, now, added_by) for e in dict.fromkeys(entries) if e not in known]
            await _write(conn, [*before, *new])
            return before

    async def remove(self, entries: list[str]) -> list[StoredNode]:
        """Remove these entries (those not in the list are ignored); returns the list before."""
        gone = set(entries)
        async with self._db.transaction() as conn:
            before = await _all(conn)
            await _write(conn, [n for n in before if n.entry not in gone])
            return before

    async def restore(self, nodes: list[StoredNode]) -> None:
        """Put back a list as an earlier change returned it."""
        async with self._db.transaction() as conn:
            await _write(conn, nodes)
