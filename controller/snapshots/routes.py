"""Snapshot handlers: ``/snapshots`` and the snapshot operations of a session (API.md §8.6, §9)."""

from __future__ import annotations

import asyncio
import tempfile

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.audit.trail import audited, created
from controller.auth.middleware import caller
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.snapshots.manager import SNAPSHOTS

routes = web.RouteTableDef()


class CreateSnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(None, max_length=256)


@routes.post("/sessions/{id}/snapshot")
@audited("snapshot.create", target=created("snapshotId"))
async def create_snapshot(request: web.Request) -> web.Response:
    body = await read_model(request, CreateSnapshotRequest, allow_empty=True)
    record = await request.app[SNAPSHOTS].create(
        caller(request), request.match_info["id"], body.name
    )
    # skipped: globals dill could not serialize (an o16n addition; clients ignore it)
    return json_response({"snapshotId": record.id, "skipped": record.skipped}, status=201)


@routes.post("/sessions/{id}/loadsnapshot/{snapshotId}")
async def load_snapshot(request: web.Request) -> web.Response:
    snapshot_id = request.match_info["snapshotId"]
    await request.app[SNAPSHOTS].load(caller(request), request.match_info["id"], snapshot_id)
    return json_response(f"Snapshot '{snapshot_id}' loaded.")


@routes.get("/snapshots")
async def list_snapshots(request: web.Request) -> web.Response:
    records = await request.app[SNAPSHOTS].owned_by(caller(request))
    return json_response([r.to_json() for r in records])


@routes.get("/snapshots/{id}")
@audited("snapshot.download")
async def get_snapshot_content(request: web.Request) -> web.StreamResponse:
    """The snapshot as a zip: working-directory files plus ``.o16n-workspace/<name>.dill``."""
    manager = request.app[SNAPSHOTS]
    record = await manager.get(caller(request), request.match_info["id"])
    with tempfile.TemporaryFile() as spool:
        await manager.write_zip(record, spool)
        size = spool.tell()
        spool.seek(0)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="snapshot-{record.id}.zip"',
                "Content-Length": str(size),
            }
        )
        await response.prepare(request)
        while chunk := await asyncio.to_thread(spool.read, 1 << 20):
            await response.write(chunk)
    await response.write_eof()
    return response


@routes.delete("/snapshots/{id}")
@audited("snapshot.delete")
async def delete_snapshot(request: web.Request) -> web.Response:
    snapshot_id = request.match_info["id"]
    await request.app[SNAPSHOTS].delete(caller(request), snapshot_id)
    return json_response(f"Snapshot '{snapshot_id}' deleted.")
