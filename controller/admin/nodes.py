"""``/admin/nodes``: the compute nodes as the engine sees them, and draining one.

``GET`` lists ``NodeControl.describe()`` (the local engine first) and the controller's SSH
public key, the line to put in each ssh:// node's ``authorized_keys`` (shown whether or not
an ssh:// node is listed yet: the key must be on a node before it is added). Draining a
node stops new containers being placed on it; what runs there goes on. The list itself is
``/computenodes``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from controller.admin.common import owner
from controller.audit.trail import audited
from controller.computenodes.registry import public_key
from controller.errors import NotFoundError
from controller.http.responses import json_response
from controller.runtime.engines import ENGINE
from controller.runtime.nodes import NodeControl
from controller.settings import SETTINGS

routes = web.RouteTableDef()


def _no_nodes(request: web.Request) -> str:
    return f"the {request.app[ENGINE].name} engine runs containers on this machine only"


def _control(request: web.Request) -> NodeControl:
    """The engine's nodes; 404 for an engine that has none (so no node of that name)."""
    control = request.app[ENGINE].nodes
    if control is None:
        name = request.match_info.get("name", "")
        raise NotFoundError(f"no compute node '{name[:100]}': {_no_nodes(request)}")
    return control


@routes.get("/admin/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    owner(request)
    key = await asyncio.to_thread(public_key, request.app[SETTINGS])
    answer: dict[str, Any] = {"nodes": [], "sshPublicKey": key}
    control = request.app[ENGINE].nodes
    if control is None:
        answer["error"] = _no_nodes(request)
    else:
        answer["nodes"] = await control.describe()
    return json_response(answer)


async def _drain(request: web.Request, draining: bool) -> web.Response:
    owner(request)
    control = _control(request)
    name = request.match_info["name"]
    await control.drain(name, draining)  # NotFoundError for an unknown name
    found = [n for n in await control.describe() if n.get("name") == name]
    if not found:  # removed meanwhile
        raise NotFoundError(f"no compute node '{name[:100]}'")
    return json_response(found[0])


@routes.post("/admin/nodes/{name}/drain")
@audited("computenode.drain")
async def drain(request: web.Request) -> web.Response:
    return await _drain(request, True)


@routes.delete("/admin/nodes/{name}/drain")
@audited("computenode.undrain")
async def undrain(request: web.Request) -> web.Response:
    return await _drain(request, False)
