"""Repository of published web services, one row per name and version."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from controller.store.db import Database, Row


@dataclass(slots=True)
class ServiceRecord:
    name: str
    version: str
    key: str
    publisher_id: int
    publisher_name: str
    created_at: float
    creation_time: str
    runtime: str
    code: str
    #: the environment store's opaque reference (the column keeps its first name: for the
    #: Docker engine it is an image name, so rows of before need no migration)
    image: str
    description: str | None = None
    init_code: str | None = None
    operation_id: str | None = None
    inputs: list[dict[str, str]] = field(default_factory=list)
    outputs: list[dict[str, str]] = field(default_factory=list)
    output_files: list[str] = field(default_factory=list)
    snapshot_id: str | None = None
    archive: str | None = None
    pool_initial: int | None = None
    pool_max: int | None = None
    isolation: str = "shared"
    #: runs on the runtime image unchanged (no rootfs changes of its own)
    generic: bool = False
    #: a realtime service's model schema (JSON text; ``archive`` names its ONNX file)
    model_schema: str | None = None
    #: the row as read: ``insert`` and ``update`` make a new one (``new_revision``), and
    #: ``update`` and ``delete`` apply to the row at this revision only
    revision: str = ""

    @classmethod
    def from_row(cls, row: Row) -> ServiceRecord:
        return cls(
            name=row["name"],
            version=row["version"],
            key=row["key"],
            publisher_id=row["publisher_id"],
            publisher_name=row["username"],
            created_at=row["created_at"],
            creation_time=row["creation_time"],
            runtime=row["runtime"],
            code=row["code"],
            image=row["image"],
            description=row["description"],
            init_code=row["init_code"],
            operation_id=row["operation_id"],
            inputs=json.loads(row["inputs"]),
            outputs=json.loads(row["outputs"]),
            output_files=json.loads(row["output_files"]),
            snapshot_id=row["snapshot_id"],
            archive=row["archive"],
            pool_initial=row["pool_initial"],
            pool_max=row["pool_max"],
            isolation=row["isolation"],
            generic=bool(row["generic"]),
            model_schema=row["model_schema"],
            revision=row["revision"],
        )

    def columns(self) -> dict[str, Any]:
        values = asdict(self)
        del values["publisher_name"]
        for key in ("inputs", "outputs", "output_files"):
            values[key] = json.dumps(values[key])
        values["generic"] = int(values["generic"])
        return values


def new_revision() -> str:
    """A row's new revision: random, so that no change of a row, and no row published
    again under its name and version, gets one it had before (the rows of one handover
    share theirs: a revision is only ever matched with its name and version)."""
    return secrets.token_hex(8)


_SELECT = "SELECT s.*, u.username FROM services s JOIN users u ON u.id = s.publisher_id"


class ServicesRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, record: ServiceRecord) -> None:
        """Store a new row, at a new revision (in ``record`` too): never one a row of the
        same name and version had before it was deleted."""
        record.revision = new_revision()
        values = record.columns()
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        await self._db.execute(
            f"INSERT INTO services ({names}) VALUES ({marks})",  # noqa: S608 (our column names)
            list(values.values()),
        )

    async def update(self, record: ServiceRecord) -> bool:
        """Write ``record`` over the row at ``record.revision``, at a new revision (in
        ``record`` too); ``False``, writing nothing, when the row is gone or at another
        revision: another controller of the group changed it meanwhile, and this one's
        copy is stale. The pool sizes are ``set_pool``'s alone: never written back."""
        values = record.columns()
        fixed = ("name", "version", "revision", "pool_initial", "pool_max")
        changed = {k: v for k, v in values.items() if k not in fixed}
        sets = ", ".join(f"{k} = ?" for k in changed)
        revision = new_revision()
        count = await self._db.execute(
            f"UPDATE services SET {sets}, revision = ? "  # noqa: S608
            "WHERE name = ? AND version = ? AND revision = ?",
            [*changed.values(), revision, record.name, record.version, record.revision],
        )
        if count != 1:
            return False
        record.revision = revision
        return True

    async def set_pool(self, name: str, version: str, initial: int, maximum: int) -> None:
        await self._db.execute(
            "UPDATE services SET pool_initial = ?, pool_max = ? WHERE name = ? AND version = ?",
            (initial, maximum, name, version),
        )

    async def exists(self, name: str, version: str) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 FROM services WHERE name = ? AND version = ?", (name, version)
        )
        return row is not None

    async def count(self, name: str | None = None) -> int:
        """How many versions there are (of ``name``)."""
        if name is None:
            row = await self._db.fetchone("SELECT COUNT(*) FROM services")
        else:
            row = await self._db.fetchone("SELECT COUNT(*) FROM services WHERE name = ?", (name,))
        return int(row[0]) if row else 0

    async def changes(self) -> int:
        """Changes when another controller of the group (or a CLI) changed the services."""
        return await self._db.changes("services")

    async def delete(self, record: ServiceRecord) -> bool:
        """Delete the row at ``record.revision``; ``False`` when it is gone or at another
        revision (as ``update``)."""
        count = await self._db.execute(
            "DELETE FROM services WHERE name = ? AND version = ? AND revision = ?",
            (record.name, record.version, record.revision),
        )
        return count == 1

    async def all(self) -> list[ServiceRecord]:
        rows = await self._db.fetchall(_SELECT + " ORDER BY s.created_at, s.name, s.version")
        return [ServiceRecord.from_row(r) for r in rows]
