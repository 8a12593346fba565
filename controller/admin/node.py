"""``/admin/node``: the engine, this instance's containers and images, disk use; drain.

What the engine reports comes from its ``node`` hook (the Docker engine's runs on its
gateway's thread pools, ``docker system df`` at most once a minute); the data directory is
walked on a worker thread, never following a symbolic link.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.admin.common import owner, query
from controller.audit.trail import audited
from controller.drain import DEFAULT_RETRY_AFTER, DRAIN
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.runtime.engines import ENGINE
from controller.services.registry import SERVICES
from controller.sessions.manager import SESSIONS
from controller.settings import SETTINGS

routes = web.RouteTableDef()


class NodeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engineDisk: bool = True


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("maintenance", min_length=1, max_length=200)
    retryAfter: int = Field(DEFAULT_RETRY_AFTER, ge=1, le=86400)


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (symbolic links are not followed)."""
    total = 0
    for directory, _, files in os.walk(root, followlinks=False):
        for name in files:
            try:
                info = (Path(directory) / name).lstat()
            except OSError:
                continue
            total += info.st_blocks * 512 if hasattr(info, "st_blocks") else info.st_size
    return total


def _data_dir(root: Path) -> dict[str, Any]:
    usage = shutil.disk_usage(root)
    return {
        "path": str(root.resolve()),
        "usedBytes": tree_size(root),
        "freeBytes": usage.free,
        "totalBytes": usage.total,
    }


async def _engine_report(request: web.Request, engine_disk: bool) -> dict[str, Any]:
    """The engine's sections; an engine without the hook says so in each."""
    hook = request.app[ENGINE].node
    if hook is None:
        missing = {"error": f"the {request.app[ENGINE].name} engine does not report this"}
        return {"engine": missing, "containers": missing, "images": missing,
                "engineDisk": missing if engine_disk else {"skipped": True}}  # fmt: skip
    return await hook(engine_disk)


@routes.get("/admin/node")
async def node(request: web.Request) -> web.Response:
    owner(request)
    params = query(request, NodeQuery)
    app = request.app

    settings = app[SETTINGS]
    report, data = await asyncio.gather(
        _engine_report(request, params.engineDisk),
        asyncio.to_thread(_data_dir, settings.data_dir),
    )
    disk = {"dataDir": data, "engine": report["engineDisk"]}
    if settings.shared_with_others:  # the group's archives: another file system, maybe
        disk["sharedDir"] = await asyncio.to_thread(_data_dir, settings.shared_dir)
    sessions = [s for s in app[SESSIONS].everyone() if s.alive]
    return json_response(
        {
            "instance": settings.instance,
            "engine": report["engine"],
            "containers": report["containers"],
            "images": report["images"],
            "disk": disk,
            "sessions": len(sessions),
            "services": len(app[SERVICES].all()),
            "drain": app[DRAIN].to_json(),
        }
    )


@routes.post("/admin/node/drain")
@audited("node.drain")
async def drain(request: web.Request) -> web.Response:
    identity = owner(request)
    body = await read_model(request, DrainRequest, allow_empty=True)
    state = request.app[DRAIN]
    state.start(body.reason, identity.username, body.retryAfter)
    return json_response(state.to_json())


@routes.post("/admin/node/undrain")
@audited("node.undrain")
async def undrain(request: web.Request) -> web.Response:
    owner(request)
    state = request.app[DRAIN]
    state.stop()
    return json_response(state.to_json())
