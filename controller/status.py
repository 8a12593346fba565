"""``GET /status``: the 9.3 ``StatusResponse`` tree for the database, the engine (the
Docker engine, its runc), the runtime image, the compute nodes, free disk, open files and
the directory users sign in with (LDAP or Azure AD), if any. A parent's status is its worst
child's, but for ``computeNodes``: a lost node warns while another still answers
(``health.HealthProbe``).

The checks are reused for ``O16N_STATUS_CACHE_SECONDS`` (``Recent``): polling costs one set
of checks a second however many clients poll, and a failure shows within that bound. The
root's ``details`` say when the checks ran (``checkedAt``) and for how long an answer is
reused (``maxAgeSeconds``). Draining is read at each request: it is the node's own state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from controller import __version__
from controller.auth.service import AUTH
from controller.drain import DRAIN
from controller.health import PROBE, Checked, Recent, node
from controller.http.public import public
from controller.http.responses import dumps, json_response
from controller.runtime.engines import ENGINE
from controller.settings import SETTINGS
from controller.store.db import DB

routes = web.RouteTableDef()

_ORDER = {"pass": 0, "warn": 1, "fail": 2}

Components = dict[str, dict[str, Any]]


def worst(components: dict[str, Any]) -> str:
    return max(
        (c["statusCode"] for c in components.values()), key=_ORDER.__getitem__, default="pass"
    )


@routes.get("/status")
async def status(request: web.Request) -> web.Response:
    app = request.app
    checks, drain = app[CHECKS], app[DRAIN]
    checked = await checks.get()
    if drain.draining:  # new work is refused until an operator undrains the node
        components = {**checked.value, "drain": node("warn", drain.to_json())}
        return json_response(_tree(checked, components, checks.max_age))
    rendered = app[RENDERED]
    if rendered.of is not checked:  # once per set of checks, not per request
        rendered.body, rendered.of = dumps(_tree(checked, checked.value, checks.max_age)), checked
    return web.Response(body=rendered.body, content_type="application/json", charset="utf-8")


@routes.get("/status/ready")
@public
async def ready(request: web.Request) -> web.Response:
    """For a load balancer's health check, without a token: 200 while this controller
    takes new work, 503 while it drains or its own container engine fails (``/status``'s
    cached checks). What the whole group shares (the database, a sign-in directory, the
    shared disk) does not count: failing there, it would take every controller out of
    the balancer at once, consumes that need none of it included. It names nothing."""
    app = request.app
    if app[DRAIN].draining:
        return json_response({"ready": False, "reason": "draining"}, status=503)
    checked = await app[CHECKS].get()
    if any(checked.value.get(name, {}).get("statusCode") == "fail" for name in _OWN):
        return json_response({"ready": False, "reason": "its container engine fails"}, status=503)
    return json_response({"ready": True})


#: The checks of this controller's own that decide ``/status/ready``.
_OWN = ("dockerEngine", "runtimeImage")


def _tree(checked: Checked[Components], components: Components, max_age: float) -> dict[str, Any]:
    details = {"version": __version__, "checkedAt": checked.at, "maxAgeSeconds": max_age}
    return node(worst(components), details, components)


class Rendered:
    """The body last written from a set of checks: until the checks run again, every
    answer of a node that is not draining is the same bytes, so they are encoded once."""

    def __init__(self) -> None:
        self.of: Checked[Components] | None = None
        self.body = b""


async def check_all(app: web.Application) -> Components:
    """Every component's node, checked side by side: each check is bounded (the database
    and the disk within a second, the engine and a directory within 2 s), so the answer is
    too."""
    database, probed, sign_in = await asyncio.gather(
        _database(app), app[PROBE].check(), app[AUTH].checks()
    )
    return {"database": database, **probed, **sign_in, **app[ENGINE].checks}


async def _database(app: web.Application) -> dict[str, Any]:
    db = app[DB]
    try:
        elapsed = await db.ping()
    except Exception as exc:  # the database is what we report on, not what fails the request
        return node("fail", {"type": db.dialect, "state": "Error", "error": str(exc)})
    return node(
        "pass",
        {
            "type": db.dialect,
            "name": db.name,
            "state": "Open",
            "latencyMs": round(elapsed * 1000, 3),
        },
    )


async def status_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cached checks; entered after the database, the auth service and the probe."""
    app[CHECKS] = Recent(lambda: check_all(app), app[SETTINGS].status_cache_seconds)
    app[RENDERED] = Rendered()
    yield
    await app[CHECKS].close()


#: The app's cached ``/status`` checks.
CHECKS = web.AppKey("status_checks", Recent[Components])
#: The body last written from them.
RENDERED = web.AppKey("status_rendered", Rendered)
