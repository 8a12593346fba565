"""``/admin/batches``: everyone's batch executions, and cancelling any of them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.admin.common import iso, owner, query
from controller.audit.trail import audited
from controller.auth.roles import Identity
from controller.batch.runner import BATCHES
from controller.errors import NotFoundError
from controller.http.responses import json_response
from controller.roles import Role
from controller.services.registry import SERVICES
from controller.store.admin import AdminRepo
from controller.store.batches import BatchesRepo
from controller.store.db import DB

routes = web.RouteTableDef()


class BatchesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(500, ge=1, le=10_000)


@routes.get("/admin/batches")
async def list_batches(request: web.Request) -> web.Response:
    owner(request)
    params = query(request, BatchesQuery)
    rows = await AdminRepo(request.app[DB]).batches(params.limit)
    return json_response([_batch_json(r) for r in rows])


def _batch_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "service": row["service_name"],
        "version": row["service_version"],
        "owner": row["username"],
        "state": row["state"],
        "completed": row["completed"],
        "total": row["total"],
        "parallelCount": row["parallel_count"],
        "error": row["error"],
        "created": iso(row["created_at"]),
        "finished": iso(row["finished_at"]),
    }


@routes.delete("/admin/batches/{id}")
@audited("batch.cancel.admin")
async def cancel_batch(request: web.Request) -> web.Response:
    owner(request)
    batch_id = request.match_info["id"]
    if not await cancel(request.app, batch_id):
        raise NotFoundError(f"no batch execution '{batch_id[:64]}'")
    return json_response({"cancelled": batch_id})


async def cancel(app: web.Application, batch_id: str) -> bool:
    """Cancel any user's batch, as its owner would (the runner checks ownership)."""
    record = await BatchesRepo(app[DB]).get(batch_id) if len(batch_id) <= 64 else None
    if record is None or record.deleted:
        return False
    service = app[SERVICES].get(record.service_name, record.service_version)
    as_owner = Identity(record.owner_id, "", Role.READER)
    await app[BATCHES].cancel(as_owner, service, batch_id)
    return True


async def cancel_owned(app: web.Application, user_id: int) -> int:
    """Cancel every unfinished batch of one user; how many."""
    cancelled = 0
    for batch_id, _, _ in await AdminRepo(app[DB]).running_batches(user_id):
        cancelled += await cancel(app, batch_id)
    return cancelled
