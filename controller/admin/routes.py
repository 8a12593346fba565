"""Every ``/admin`` route, for the app factory (Owner role only; see each module)."""

from __future__ import annotations

from aiohttp import web

from controller.admin import audit_routes, batches, services, sessions, users

routes: list[web.RouteDef] = [
    *users.routes,
    *sessions.routes,
    *services.routes,
    *batches.routes,
    *audit_routes.routes,
]
