"""Every ``/admin`` route, for the app factory (Owner role only; see each module)."""

from __future__ import annotations

from aiohttp import web

from controller.admin import audit_routes, batches, node, services, sessions, users

routes: list[web.RouteDef] = [
    *users.routes,
    *sessions.routes,
    *services.routes,
    *batches.routes,
    *node.routes,
    *audit_routes.routes,
]
