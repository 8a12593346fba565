"""Every ``/admin`` route, for the app factory (Owner role only; see each module)."""

from __future__ import annotations

from aiohttp import web

from controller.admin import (
    audit_routes,
    batches,
    controllers,
    diagnostics,
    node,
    nodes,
    services,
    sessions,
    users,
)
from controller.admin.console import routes as console_routes

routes: list[web.RouteDef] = [
    *console_routes,
    *users.routes,
    *sessions.routes,
    *services.routes,
    *batches.routes,
    *node.routes,
    *nodes.routes,
    *controllers.routes,
    *audit_routes.routes,
    *diagnostics.routes,
]
