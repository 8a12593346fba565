"""``/computenodes`` (ML Server 9.3's centralized configuration): the compute node list.

``GET`` answers ``{"computeNodes": [...]}``; ``POST`` replaces the list, ``PUT`` adds to
it, ``DELETE`` removes from it, each with ``{"entries": [...]}`` (a body on ``DELETE`` too,
as ML Server takes it) and answering the list after the change. All four are for Owners
only (ML Server's "admin role"). Entries are Docker engine addresses
(``controller.runtime.nodes``), stored normalised, duplicates collapsed; a bad entry is a
400 naming it and its index, and nothing changes. Removing an entry not in the list is a
400 too (the swagger's only error for a bad body), and nothing changes. Every write is in
the audit trail with the list before and after it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.audit.trail import audited, body_json
from controller.auth.middleware import caller
from controller.computenodes.registry import COMPUTE_NODES, Change, parse_entries
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.roles import Role
from controller.runtime.nodes import NodeAddressError, parse_node

routes = web.RouteTableDef()

#: The most entries one request may carry.
MAX_ENTRIES = 256

#: The change a write made, for its audit entry.
CHANGE = web.RequestKey("o16n_compute_nodes_change", Change)


class UpdateComputeNodesRequest(BaseModel):
    """ML Server's ``UpdateComputeNodesRequest`` (keys matched regardless of case)."""

    model_config = ConfigDict(extra="ignore")
    entries: list[str] = Field(max_length=MAX_ENTRIES)


def _owner(request: web.Request) -> str:
    identity = caller(request)
    identity.require(Role.OWNER, "changing the compute nodes")
    return identity.username


async def _change(request: web.Request) -> dict[str, Any]:
    """The list before and after the change; for a refused one, the entries asked for
    (normalised; one that does not parse as ``"<invalid>"``: it may hold a password)."""
    change = request.get(CHANGE)
    if change is not None:
        return {"before": change.before, "after": change.after}
    body = await body_json(request)
    if not isinstance(body, dict):
        return {}
    asked = next((v for k, v in body.items() if str(k).lower() == "entries"), None)
    if not isinstance(asked, list):
        return {}
    return {"entries": [_shown(e) for e in asked[:MAX_ENTRIES]]}


def _shown(entry: Any) -> str:
    try:
        return parse_node(entry).entry if isinstance(entry, str) else "<invalid>"
    except NodeAddressError:
        return "<invalid>"


async def _target(request: web.Request, response: web.StreamResponse | None) -> str:
    return "computenodes"


def _answer(request: web.Request, change: Change) -> web.Response:
    request[CHANGE] = change
    return json_response({"computeNodes": change.after})


@routes.get("/computenodes")
async def get_compute_nodes(request: web.Request) -> web.Response:
    identity = caller(request)
    identity.require(Role.OWNER, "the compute node list")
    return json_response({"computeNodes": await request.app[COMPUTE_NODES].entries()})


@routes.post("/computenodes")
@audited("computenodes.set", target=_target, detail=_change)
async def set_compute_nodes(request: web.Request) -> web.Response:
    actor = _owner(request)
    body = await read_model(request, UpdateComputeNodesRequest)
    nodes = parse_entries(body.entries)
    return _answer(request, await request.app[COMPUTE_NODES].replace(nodes, actor))


@routes.put("/computenodes")
@audited("computenodes.add", target=_target, detail=_change)
async def add_compute_nodes(request: web.Request) -> web.Response:
    actor = _owner(request)
    body = await read_model(request, UpdateComputeNodesRequest)
    nodes = parse_entries(body.entries)
    return _answer(request, await request.app[COMPUTE_NODES].add(nodes, actor))


@routes.delete("/computenodes")
@audited("computenodes.remove", target=_target, detail=_change)
async def remove_compute_nodes(request: web.Request) -> web.Response:
    _owner(request)
    body = await read_model(request, UpdateComputeNodesRequest)
    nodes = parse_entries(body.entries)
    return _answer(request, await request.app[COMPUTE_NODES].remove(nodes))
