"""``/admin/node``: the engine, this instance's containers and images, disk use; drain.

Every engine call runs on the gateway's thread pools (``docker system df`` on the slow
one, at most once a minute); the data directory is walked on a worker thread, never
following a symbolic link.
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
from controller.errors import O16nError
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.runtime.docker.gateway import DOCKER
from controller.runtime.docker.stats import CONTAINER_STATS
from controller.runtime.sandboxes import SANDBOXES
from controller.runtime.spec import LABEL_PREFIX
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


async def _engine(request: web.Request) -> dict[str, Any]:
    try:
        info, version = await request.app[DOCKER].engine_details()
    except O16nError as exc:
        return {"error": exc.message}
    components = {
        str(c.get("Name", "")).lower(): str(c.get("Version", "?"))
        for c in version.get("Components") or []
        if isinstance(c, dict)
    }
    return {
        "version": str(version.get("Version", "?")),
        "apiVersion": str(version.get("ApiVersion", "?")),
        "runc": components.get("runc"),
        "containerd": components.get("containerd"),
        "kernel": str(info.get("KernelVersion", "?")),
        "os": str(info.get("OperatingSystem", "?")),
        "cgroupVersion": str(info.get("CgroupVersion", "?")),
        "cgroupDriver": str(info.get("CgroupDriver", "?")),
        "storageDriver": str(info.get("Driver", "?")),
        "cpus": info.get("NCPU"),
        "memoryBytes": info.get("MemTotal"),
    }


async def _containers(request: web.Request) -> dict[str, Any]:
    """This instance's containers (by its labels), counted by kind and state."""
    instance = request.app[SETTINGS].instance
    try:
        found = await request.app[DOCKER].list_containers(f"{LABEL_PREFIX}instance={instance}")
    except O16nError as exc:
        return {"error": exc.message}
    kinds: dict[str, dict[str, int]] = {}
    for container in found:
        kind = container.labels.get(LABEL_PREFIX + "kind", "?")
        states = kinds.setdefault(kind, {})
        states[container.status] = states.get(container.status, 0) + 1
    return kinds


async def _images(request: web.Request) -> dict[str, Any]:
    gateway, sandboxes = request.app[DOCKER], request.app[SANDBOXES]
    runtime: dict[str, Any] = {"image": sandboxes.image}
    try:
        runtime["sizeBytes"] = await gateway.image_size(sandboxes.image)
        runtime["present"] = True
        instance = request.app[SETTINGS].instance
        counts = {}  # by their exact labels, like every ownership question (never a name)
        for kind in ("service", "snapshot"):
            labels = {LABEL_PREFIX + "instance": instance, LABEL_PREFIX + "kind": kind}
            counts[kind] = len(await gateway.image_tags(labels, None))
    except O16nError as exc:
        runtime["present"] = False
        return {"runtime": runtime, "error": exc.message}
    return {
        "runtime": runtime,
        "services": counts["service"],
        "snapshots": counts["snapshot"],
    }


async def _engine_disk(request: web.Request) -> dict[str, Any]:
    try:
        return await request.app[CONTAINER_STATS].engine_disk()
    except TimeoutError:
        return {"error": "docker system df did not answer in time"}
    except O16nError as exc:
        return {"error": exc.message}


@routes.get("/admin/node")
async def node(request: web.Request) -> web.Response:
    owner(request)
    params = query(request, NodeQuery)
    app = request.app

    async def nothing() -> dict[str, Any]:
        return {"skipped": True}

    engine, containers, images, data, engine_disk = await asyncio.gather(
        _engine(request),
        _containers(request),
        _images(request),
        asyncio.to_thread(_data_dir, app[SETTINGS].data_dir),
        _engine_disk(request) if params.engineDisk else nothing(),
    )
    sessions = [s for s in app[SESSIONS].everyone() if s.alive]
    return json_response(
        {
            "instance": app[SETTINGS].instance,
            "engine": engine,
            "containers": containers,
            "images": images,
            "disk": {"dataDir": data, "engine": engine_disk},
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
