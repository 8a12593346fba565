"""``/admin/controllers``: the controllers sharing this database, as their rows say.

Read only (nothing to audit): each controller's id (new at every start), name (its
``O16N_INSTANCE``), internal URL, start, last heartbeat, whether that heartbeat is recent
enough for it to count as alive, and the group-wide leases it holds. A killed
controller's row stays, not alive: nothing removes it yet (docs/web-nodes.md).
"""

from __future__ import annotations

import time

from aiohttp import web

from controller.admin.common import iso, owner
from controller.group.membership import MEMBERSHIP
from controller.http.responses import json_response

routes = web.RouteTableDef()


@routes.get("/admin/controllers")
async def list_controllers(request: web.Request) -> web.Response:
    owner(request)
    membership = request.app[MEMBERSHIP]
    rows, leases = await membership.group()
    now = time.time()
    held: dict[str, list[str]] = {}
    for lease in leases:
        held.setdefault(lease.holder, []).append(lease.name)
    return json_response(
        {
            "leaseSeconds": membership.lease_seconds,
            "controllers": [
                {
                    "id": row.id,
                    "name": row.name,
                    "internalUrl": row.internal_url,
                    "started": iso(row.started_at),
                    "lastHeartbeat": iso(row.heartbeat_at),
                    "alive": row.expires_at > now,
                    "self": row.id == membership.id,
                    "leases": sorted(held.get(row.id, [])),
                }
                for row in rows
            ],
        }
    )
