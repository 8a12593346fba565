"""Repository of snapshots (the archive files and environments themselves live elsewhere)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from controller.store.db import Database, Row


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    id: str
    name: str | None
    owner_id: int
    owner_name: str
    runtime: str
    #: the environment store's opaque reference (the column keeps its first name: for the
    #: Docker engine it is an image name, so rows of before need no migration)
    image: str
    archive: str
    size: int
    sha256: str
    skipped: dict[str, str]
    created_at: float
    creation_time: str
    pristine: bool = False

    @classmethod
    def from_row(cls, row: Row) -> SnapshotRecord:
        return cls(
            id=row["id"],
            name=row["name"],
            owner_id=row["owner_id"],
            owner_name=row["username"],
            runtime=row["runtime"],
            image=row["image"],
            archive=row["archive"],
            size=row["size"],
            sha256=row["sha256"],
            skipped=json.loads(row["skipped"]),
            created_at=row["created_at"],
            creation_time=row["creation_time"],
            pristine=bool(row["pristine"]),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner_name,
            "creationTime": self.creation_time,
            "contentSize": self.size,
        }


_SELECT = "SELECT s.*, u.username FROM snapshots s JOIN users u ON u.id = s.owner_id"


class SnapshotsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, r: SnapshotRecord) -> None:
        await self._db.execute(
            "INSERT INTO snapshots (id, name, owner_id, runtime, image, archive, size, sha256,"
            " skipped, created_at, creation_time, pristine)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.id,
                r.name,
                r.owner_id,
                r.runtime,
                r.image,
                r.archive,
                r.size,
                r.sha256,
                json.dumps(r.skipped),
                r.created_at,
                r.creation_time,
                int(r.pristine),
            ),
        )

    async def get(self, snapshot_id: str) -> SnapshotRecord | None:
        row = await self._db.fetchone(_SELECT + " WHERE s.id = ?", (snapshot_id,))
        return SnapshotRecord.from_row(row) if row else None

    async def owned_by(self, owner_id: int) -> list[SnapshotRecord]:
        rows = await self._db.fetchall(
            _SELECT + " WHERE s.owner_id = ? ORDER BY s.created_at", (owner_id,)
        )
        return [SnapshotRecord.from_row(r) for r in rows]

    async def all(self) -> list[SnapshotRecord]:
        rows = await self._db.fetchall(_SELECT)
        return [SnapshotRecord.from_row(r) for r in rows]

    async def delete(self, snapshot_id: str) -> None:
        await self._db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
