"""Where a request for a session another controller of the group holds goes: there.

A session lives in one container, linked to one controller's agent listener, so every
request under ``/sessions/{id}`` (and a snapshot of it) must reach the controller that holds
it. Any controller answers: this middleware, after authentication, finds the holder in
the database (only for a session this controller does not hold, so its own sessions cost
no lookup) and passes the request on (``http/forward.py``). A holder that is not alive is
a 503: the group takes its sessions over within its lease (``SessionManager.take_over``),
and the client tries again. docs/web-nodes.md has the design.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from controller.auth.roles import IDENTITY
from controller.errors import ServiceUnavailableError
from controller.group.membership import MEMBERSHIP
from controller.http.forward import RETRY_AFTER, client_session, forward, forwarded
from controller.roles import Role
from controller.sessions.manager import SESSIONS
from controller.settings import SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Route paths whose ``{id}`` is a session's: the owner's, and an Owner's administration.
_SESSION_ROUTES = ("/sessions/{id}",)
_ADMIN_ROUTES = ("/admin/sessions/{id}",)

#: The client forwards go through (``forwarding_ctx``).
FORWARDER = web.AppKey("forwarder", aiohttp.ClientSession)


def _session_id(request: web.Request) -> tuple[str, bool] | None:
    """The session a request is for, and whether it comes through the administration."""
    info = request.match_info
    resource = info.route.resource
    if resource is None or "id" not in info:
        return None
    if resource.canonical.startswith(_SESSION_ROUTES):
        return info["id"], False
    if resource.canonical.startswith(_ADMIN_ROUTES):
        return info["id"], True
    return None


@web.middleware
async def forwarding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Pass a request for a session held elsewhere on to its controller."""
    target = _session_id(request)
    identity = request.get(IDENTITY)
    if target is None or identity is None or forwarded(request):
        return await handler(request)
    session_id, administration = target
    if administration and identity.role is not Role.OWNER:
        return await handler(request)  # its 403
    app = request.app
    record = await app[SESSIONS].held_elsewhere(None if administration else identity, session_id)
    if record is None or record.controller is None:
        return await handler(request)
    members = await app[MEMBERSHIP].members()
    url = next((m.internal_url for m in members if m.name == record.controller), None)
    if url is None:
        raise ServiceUnavailableError(
            f"the controller holding session '{session_id}' stopped answering; another takes "
            f"it over within {app[SETTINGS].lease_seconds:g} s: try again shortly",
            retry_after=RETRY_AFTER,
        )
    return await forward(app[FORWARDER], request, url, app[SETTINGS].instance)


async def forwarding_ctx(app: web.Application) -> AsyncIterator[None]:
    """The client session of forwards, closed at the end."""
    settings = app[SETTINGS]
    # the longest a holder may rightly stay silent: waiting for the session, then running
    app[FORWARDER] = client_session(settings.session_busy_wait + settings.execute_timeout + 60)
    yield
    await app[FORWARDER].close()
