"""``/admin/sessions``: every user's sessions; close or interrupt any of them."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from controller.admin.common import iso, owner, query
from controller.audit.trail import audited
from controller.http.responses import json_response
from controller.runtime.engines import ENGINE
from controller.runtime.nodes import LOCAL
from controller.sessions.manager import SESSIONS, Session
from controller.settings import SETTINGS
from controller.store.sessions import SessionRecord

routes = web.RouteTableDef()


class SessionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stats: bool = False
    owner: str | None = None
    state: Literal["idle", "busy", "dead"] | None = None


def state_of(session: Session) -> str:
    if not session.alive:
        return "dead"
    return "busy" if session.executing or session.lock.locked() else "idle"


def session_json(session: Session) -> dict[str, Any]:
    sandbox = session.sandbox
    return {
        "id": session.id,
        "name": session.name,
        "owner": session.owner_name,
        "created": iso(session.created_at),
        "lastUsed": iso(session.last_used),
        "state": state_of(session),
        "deadReason": session.dead_reason,
        "snapshotId": session.snapshot_id,
        "containerId": sandbox.handle.engine_id[:12] if sandbox is not None else None,
        # the compute node's name, as /admin/nodes lists it
        "computeNode": (sandbox.handle.place or LOCAL) if sandbox is not None else None,
        "historyLength": session.history_length,
    }


def elsewhere_json(record: SessionRecord) -> dict[str, Any]:
    """A session another controller of the group holds, as the database knows it; its
    own ``GET /admin/sessions/{id}`` (passed on to that controller) tells the rest."""
    return {
        "id": record.id,
        "name": record.name,
        "owner": record.owner_name,
        "created": iso(record.created_at),
        "lastUsed": iso(record.last_used_at),
        "state": None,
        "deadReason": None,
        "snapshotId": None,
        "containerId": record.container_id[:12],
        "computeNode": None,
        "historyLength": None,
        "controller": record.controller,
    }


@routes.get("/admin/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """Everyone's sessions. Memory and CPU only with ``?stats=true`` (one engine call per
    live session, concurrent and bounded): the plain list never waits on Docker."""
    owner(request)
    params = query(request, SessionsQuery)
    sessions = [
        s
        for s in request.app[SESSIONS].everyone()
        if (params.owner is None or s.owner_name == params.owner)
        and (params.state is None or state_of(s) == params.state)
    ]
    me = request.app[SETTINGS].instance
    items = [{**session_json(s), "controller": me} for s in sessions]
    if params.state is None:  # another controller's session: its state is known there
        items += [
            elsewhere_json(r)
            for r in await request.app[SESSIONS].others()
            if params.owner is None or r.owner_name == params.owner
        ]
    stats = request.app[ENGINE].stats
    if params.stats:
        ids = {s.id: s.sandbox.handle.engine_id for s in sessions if s.sandbox is not None}
        samples = await stats(list(ids.values())) if stats is not None else {}
        for item in items:
            container = ids.get(item["id"])
            item["stats"] = samples.get(container) if container is not None else None
    return json_response(items)


@routes.get("/admin/sessions/{id}")
async def get_session(request: web.Request) -> web.Response:
    owner(request)
    session = request.app[SESSIONS].find(request.match_info["id"])
    return json_response({**session_json(session), "controller": request.app[SETTINGS].instance})


@routes.delete("/admin/sessions/{id}")
@audited("session.close.admin")
async def close_session(request: web.Request) -> web.Response:
    owner(request)
    session = await request.app[SESSIONS].close_by_admin(request.match_info["id"])
    return json_response({**session_json(session), "controller": request.app[SETTINGS].instance})


@routes.post("/admin/sessions/{id}/cancel")
@audited("session.cancel.admin")
async def cancel_session(request: web.Request) -> web.Response:
    owner(request)
    running = await request.app[SESSIONS].cancel_any(request.match_info["id"])
    return json_response({"interrupted": running})
