"""``@audited(action)``: the one line a handler needs to be in the audit trail."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controller.audit.log import AUDIT, AuditLog, outcome_of, sha256
from controller.auth.roles import IDENTITY
from controller.errors import O16nError
from controller.http.bodies import PARSED_BODY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Describe = Callable[[web.Request, web.StreamResponse | None], Awaitable[str]]
Detail = Callable[[web.Request], Awaitable[dict[str, Any]]]


async def match_target(request: web.Request, response: web.StreamResponse | None) -> str:
    """The default target: the path's parameters, in order (``name/version``, an id)."""
    return "/".join(request.match_info.values()) or request.path


def audited(
    action: str,
    target: Describe = match_target,
    detail: Detail | None = None,
    actor: Callable[[web.Request], Awaitable[str]] | None = None,
) -> Callable[[Handler], Handler]:
    """Record ``action`` for every call of the handler, whatever its outcome."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            response: web.StreamResponse | None = None
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except O16nError as exc:
                status = exc.status
                raise
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                audit = request.app.get(AUDIT)
                if audit is not None:
                    await _record(audit, request, action, status, response, target, detail, actor)

        return run

    return wrap


async def _record(
    audit: AuditLog,
    request: web.Request,
    action: str,
    status: int,
    response: web.StreamResponse | None,
    target: Describe,
    detail: Detail | None,
    actor: Callable[[web.Request], Awaitable[str]] | None,
) -> None:
    identity = request.get(IDENTITY)
    who = identity.username if identity is not None else "-"
    try:
        if actor is not None:
            who = await actor(request)
        what = await target(request, response if status < 400 else None)
        extra = await detail(request) if detail is not None else None
    except Exception:  # a body that was never valid JSON, say: the entry is still written
        what, extra = request.path, None
    audit.record(
        action,
        what,
        outcome_of(status),
        actor=who,
        status=status,
        detail=extra,
        request=request,
    )


async def body_json(request: web.Request) -> Any:
    """The request body as JSON (already read, and usually parsed, by the handler)."""
    if PARSED_BODY in request:
        return request[PARSED_BODY]
    raw = await request.read()
    return json.loads(raw) if raw.strip() else {}


async def response_json(response: web.StreamResponse | None) -> Any:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        return json.loads(response.body)
    return None


# --- targets and details of the events recorded outside /admin -------------------------------


async def login_name(request: web.Request) -> str:
    """The user name a login tried (never the password)."""
    body = await body_json(request)
    name = body.get("username") if isinstance(body, dict) else None
    return name[:256] if isinstance(name, str) else "-"


async def login_target(request: web.Request, response: web.StreamResponse | None) -> str:
    return await login_name(request)


def created(field: str) -> Describe:
    """The target is ``field`` of the JSON reply (the id of what was created)."""

    async def describe(request: web.Request, response: web.StreamResponse | None) -> str:
        body = await response_json(response)
        if isinstance(body, dict) and isinstance(body.get(field), str):
            return str(body[field])
        return await match_target(request, response)

    return describe


async def service_target(request: web.Request, response: web.StreamResponse | None) -> str:
    """``name/version`` (from the reply ``/api/{name}/{version}`` when the version was made)."""
    body = await response_json(response)
    if isinstance(body, str) and body.startswith("/api/"):
        return body[len("/api/") :]
    return await match_target(request, response)


async def code_digest(request: web.Request) -> dict[str, Any]:
    """SHA-256 of the code and initCode a publish or patch sent, and its snapshot id."""
    body = await body_json(request)
    if not isinstance(body, dict):
        return {}
    folded = {str(k).replace("_", "").lower(): v for k, v in body.items()}
    detail: dict[str, Any] = {}
    for key, name in (("code", "codeSha256"), ("initcode", "initCodeSha256")):
        value = folded.get(key)
        if isinstance(value, str) and value:
            detail[name] = sha256(value)
    snapshot = folded.get("snapshotid")
    if isinstance(snapshot, str):
        detail["snapshotId"] = snapshot[:64]
    return detail
