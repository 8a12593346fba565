"""``GET /status``: the 9.3 ``StatusResponse`` tree for the database, the engine (the
Docker engine, its runc), the runtime image, free disk, open files and the directory users sign in
with (LDAP or Azure AD), if any.
A parent's status is its worst child's."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from controller import __version__
from controller.auth.service import AUTH
from controller.drain import DRAIN
from controller.health import PROBE, node
from controller.http.responses import json_response
from controller.runtime.engines import ENGINE
from controller.settings import SETTINGS
from controller.store.db import DB

routes = web.RouteTableDef()

_ORDER = {"pass": 0, "warn": 1, "fail": 2}


def worst(components: dict[str, Any]) -> str:
    return max(
        (c["statusCode"] for c in components.values()), key=_ORDER.__getitem__, default="pass"
    )


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    app = request.app
    # side by side: the ping is bounded (under a second), so the answer is too
    database, checks, sign_in = await asyncio.gather(
        _database(app), app[PROBE].check(), app[AUTH].checks()
    )
    components = {
        "database": database,
        **checks,
        **sign_in,
        **app[ENGINE].checks,
    }
    if app[DRAIN].draining:  # new work is refused until an operator undrains the node
        components["drain"] = node("warn", app[DRAIN].to_json())
    return json_response(node(worst(components), {"version": __version__}, components))


async def _database(app: web.Application) -> dict[str, Any]:
    try:
        elapsed = await app[DB].ping()
    except Exception as exc:  # the database is what we report on, not what fails the request
        return node("fail", {"type": "sqlite", "state": "Error", "error": str(exc)})
    return node(
        "pass",
        {
            "type": "sqlite",
            "name": app[SETTINGS].db_path.name,
            "state": "Open",
            "latencyMs": round(elapsed * 1000, 3),
        },
    )
