"""``/admin/services`` and ``/admin/snapshots``: every version with its publisher and pool
(numbers kept in memory by the pool: no Docker call), recycling a pool, snapshot sizes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.admin.common import iso, owner
from controller.audit.trail import audited
from controller.http.responses import json_response
from controller.services.registry import SERVICES, Service
from controller.store.db import DB
from controller.store.snapshots import SnapshotsRepo

routes = web.RouteTableDef()


def service_json(service: Service) -> dict[str, Any]:
    record, pool = service.record, service.pool
    return {
        "name": record.name,
        "version": record.version,
        "publisher": record.publisher_name,
        "created": iso(record.created_at),
        "snapshotId": record.snapshot_id,
        "pool": {
            "status": pool.status,
            "initial": pool.initial,
            "max": pool.maximum,
            "idle": pool.ready,
            "busy": pool.busy,
            "starting": pool.starting,
            "queued": pool.queued,
            "rejected": pool.rejected,
            "lastError": pool.last_error or None,
        },
        "requestsServed": pool.served,
    }


@routes.get("/admin/services")
async def list_services(request: web.Request) -> web.Response:
    owner(request)
    services = sorted(request.app[SERVICES].all(), key=lambda s: s.record.created_at)
    return json_response([service_json(s) for s in services])


@routes.post("/admin/services/{name}/{version}/recycle")
@audited("service.pool.recycle")
async def recycle(request: web.Request) -> web.Response:
    owner(request)
    service = await request.app[SERVICES].recycle(
        request.match_info["name"], request.match_info["version"]
    )
    return json_response(service_json(service))


@routes.get("/admin/snapshots")
async def list_snapshots(request: web.Request) -> web.Response:
    owner(request)
    records = await SnapshotsRepo(request.app[DB]).all()
    return json_response(
        [
            {
                "id": r.id,
                "name": r.name,
                "owner": r.owner_name,
                "created": iso(r.created_at),
                "sizeBytes": r.size,
                "sha256": r.sha256,
                "image": r.image,
            }
            for r in sorted(records, key=lambda r: r.created_at)
        ]
    )
