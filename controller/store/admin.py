"""Queries across owners, for operator administration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.errors import NotFoundError
from controller.roles import Role
from controller.store.db import Database
from controller.store.services import new_revision


@dataclass(frozen=True, slots=True)
class UserOverview:
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: float
    last_login_at: float | None
    services: int
    snapshots: int
    #: ``local``, ``ldap`` or ``aad`` (``UserRecord.source``)
    source: str = "local"
    display_name: str | None = None
    email: str | None = None


_OVERVIEW = (
    "SELECT u.id, u.username, u.role, u.disabled, u.created_at, u.last_login_at,"
    " u.source, u.display_name, u.email,"
    " (SELECT COUNT(*) FROM services s WHERE s.publisher_id = u.id) AS services,"
    " (SELECT COUNT(*) FROM snapshots p WHERE p.owner_id = u.id) AS snapshots"
    " FROM users u"
)


class AdminRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def users(self, username: str | None = None) -> list[UserOverview]:
        if username is None:
            rows = await self._db.fetchall(_OVERVIEW + " ORDER BY u.id")
        else:
            rows = await self._db.fetchall(_OVERVIEW + " WHERE u.username = ?", (username,))
        return [
            UserOverview(
                id=r["id"],
                username=r["username"],
                role=Role(r["role"]),
                disabled=bool(r["disabled"]),
                created_at=r["created_at"],
                last_login_at=r["last_login_at"],
                services=r["services"],
                snapshots=r["snapshots"],
                source=r["source"],
                display_name=r["display_name"],
                email=r["email"],
            )
            for r in rows
        ]

    async def user(self, username: str) -> UserOverview:
        found = await self.users(username)
        if not found:
            raise NotFoundError(f"no user '{username[:100]}'")
        return found[0]

    async def enabled_owners(self) -> list[str]:
        rows = await self._db.fetchall(
            "SELECT username FROM users WHERE role = 'Owner' AND disabled = 0"
        )
        return [r["username"] for r in rows]

    async def transfer(self, from_id: int, to_id: int) -> tuple[int, int]:
        """Hand every service version and snapshot of one user to another, atomically;
        returns how many of each moved."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(  # a change: a copy of before is stale (services.py)
                "UPDATE services SET publisher_id = ?, revision = ? WHERE publisher_id = ?",
                (to_id, new_revision(), from_id),
            )
            services = cur.rowcount
            cur = await conn.execute(
                "UPDATE snapshots SET owner_id = ? WHERE owner_id = ?", (to_id, from_id)
            )
            return services, cur.rowcount

    async def batches(self, limit: int) -> list[dict[str, Any]]:
        rows = await self._db.fetchall(
            "SELECT b.id, b.service_name, b.service_version, b.state, b.total, b.completed,"
            " b.parallel_count, b.error, b.created_at, b.finished_at, u.username"
            " FROM batches b JOIN users u ON u.id = b.owner_id WHERE b.deleted = 0"
            " ORDER BY b.created_at DESC LIMIT ?",
            (limit,),
        )
        return [dict(r) for r in rows]

    async def running_batches(self, owner_id: int | None = None) -> list[tuple[str, str, str]]:
        """(id, service name, version) of unfinished batches, of one owner or everyone's."""
        sql = (
            "SELECT id, service_name, service_version FROM batches"
            " WHERE deleted = 0 AND state IN ('Pending', 'InProgress')"
        )
        rows = await (
            self._db.fetchall(sql + " AND owner_id = ?", (owner_id,))
            if owner_id is not None
            else self._db.fetchall(sql)
        )
        return [(r["id"], r["service_name"], r["service_version"]) for r in rows]
