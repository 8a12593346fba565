"""``GET /status``: the 9.3 ``StatusResponse`` tree for the database, the Docker engine,
the runtime image and free disk. A parent's status is its worst child's."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from aiohttp import web

from controller import __version__
from controller.http.responses import json_response
from controller.keys import DB, PROBE, SETTINGS
from controller.runtime.health import node

routes = web.RouteTableDef()

_ORDER = {"pass": 0, "warn": 1, "fail": 2}
DISK_WARN = 2 * 1024**3
DISK_FAIL = 256 * 1024**2


def worst(components: dict[str, Any]) -> str:
    return max(
        (c["statusCode"] for c in components.values()), key=_ORDER.__getitem__, default="pass"
    )


def disk(path: Path) -> dict[str, Any]:
    usage = shutil.disk_usage(path)
    status = "fail" if usage.free < DISK_FAIL else "warn" if usage.free < DISK_WARN else "pass"
    return node(
        status, {"path": str(path.resolve()), "freeBytes": usage.free, "totalBytes": usage.total}
    )


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    try:
        elapsed = await app[DB].ping()
        database = node(
            "pass",
            {
                "type": "sqlite",
                "name": settings.db_path.name,
                "state": "Open",
                "latencyMs": round(elapsed * 1000, 3),
            },
        )
    except Exception as exc:  # the database is what we report on, not what fails the request
        database = node("fail", {"type": "sqlite", "state": "Error", "error": str(exc)})
    engine, image = await app[PROBE].check()
    components = {
        "database": database,
        "dockerEngine": engine,
        "runtimeImage": image,
        "disk": await asyncio.to_thread(disk, settings.data_dir),
    }
    return json_response(node(worst(components), {"version": __version__}, components))
