"""Repository of the controllers sharing this database, and of their named leases.

A controller's row says where the others reach it and until when it counts as alive (it
heartbeats the row). A lease is one row per job name: taking it is one compare-and-set
statement, so two controllers racing for it never both hold it, whatever the backend.
Times are the controllers' own clocks (Unix seconds), passed in: the group's clocks must
agree to well within a lease (NTP does).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.store.db import Database, Row

#: Taken if nobody holds it, its holder let it expire, or it is already ours (a renewal).
#: ``rowcount`` is 1 when it is ours afterwards, 0 when another controller keeps it.
_TAKE = (
    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at"
    " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?"
)


@dataclass(frozen=True, slots=True)
class ControllerRecord:
    id: str
    name: str
    internal_url: str
    started_at: float
    heartbeat_at: float
    expires_at: float

    @classmethod
    def from_row(cls, row: Row) -> ControllerRecord:
        return cls(
            id=row["id"],
            name=row["name"],
            internal_url=row["internal_url"],
            started_at=row["started_at"],
            heartbeat_at=row["heartbeat_at"],
            expires_at=row["expires_at"],
        )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    name: str
    holder: str
    expires_at: float


class GroupRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- controllers ------------------------------------------------------------------------

    async def register(self, record: ControllerRecord) -> None:
        """Add this controller's row (or put it back, if a clean-up took it meanwhile)."""
        await self._db.write_one(
            "INSERT INTO controllers"
            " (id, name, internal_url, started_at, heartbeat_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
            " internal_url = excluded.internal_url, heartbeat_at = excluded.heartbeat_at,"
            " expires_at = excluded.expires_at",
            (
                record.id,
                record.name,
                record.internal_url,
                record.started_at,
                record.heartbeat_at,
                record.expires_at,
            ),
        )

    async def heartbeat(self, controller_id: str, now: float, seconds: float) -> bool:
        """Extend a controller's life to ``now + seconds``; False if it has no row."""
        count = await self._db.write_one(
            "UPDATE controllers SET heartbeat_at = ?, expires_at = ? WHERE id = ?",
            (now, now + seconds, controller_id),
        )
        return count == 1

    async def forget(self, controller_id: str) -> None:
        """At a clean stop: the controller's row and its leases go, so another controller
        takes the leases at once instead of after they expire."""
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM leases WHERE holder = ?", (controller_id,))
            await conn.execute("DELETE FROM controllers WHERE id = ?", (controller_id,))

    async def controllers(self) -> list[ControllerRecord]:
        """Every row, the dead controllers' too, oldest start first."""
        rows = await self._db.fetchall("SELECT * FROM controllers ORDER BY started_at, id")
        return [ControllerRecord.from_row(r) for r in rows]

    async def purge(self, older_than: float) -> int:
        """Delete the rows of controllers dead since before ``older_than`` (killed: a clean
        stop deletes its own); how many. A dead controller's sessions are found without
        its row (``SessionsRepo.orphaned``)."""
        return await self._db.execute("DELETE FROM controllers WHERE expires_at < ?", (older_than,))

    async def live(self, now: float) -> list[ControllerRecord]:
        """The controllers whose last heartbeat has not expired at ``now``."""
        rows = await self._db.fetchall(
            "SELECT * FROM controllers WHERE expires_at > ? ORDER BY started_at, id", (now,)
        )
        return [ControllerRecord.from_row(r) for r in rows]

    # --- leases -----------------------------------------------------------------------------

    async def try_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        """Take or renew lease ``name`` for ``holder`` until ``now + seconds``; whether
        ``holder`` holds it now. One statement: a compare-and-set."""
        count = await self._db.write_one(_TAKE, (name, holder, now + seconds, now))
        return count == 1

    async def release(self, name: str, holder: str) -> bool:
        """Give lease ``name`` up, if ``holder`` still has it; whether it had."""
        count = await self._db.write_one(
            "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)
        )
        return count == 1

    async def leases(self, now: float) -> list[LeaseRecord]:
        """The leases held (not expired) at ``now``."""
        rows = await self._db.fetchall(
            "SELECT name, holder, expires_at FROM leases WHERE expires_at > ? ORDER BY name",
            (now,),
        )
        return [LeaseRecord(r["name"], r["holder"], r["expires_at"]) for r in rows]
