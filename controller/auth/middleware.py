"""The bearer-token check. It only attaches who is calling; handlers decide what they may do."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.auth.roles import IDENTITY, Identity
from controller.auth.service import AUTH
from controller.errors import UnauthorizedError
from controller.http.public import is_public
from controller.timing import now, record


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_public(request):
        return await handler(request)
    header = request.headers.get("Authorization")
    if not header:
        raise UnauthorizedError("missing Authorization header; send 'Bearer <access_token>'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <access_token>'")
    started = now()
    try:
        request[IDENTITY] = await request.app[AUTH].authenticate(token.strip())
    finally:  # a refused token's 401 says how long the refusal took
        record("auth", started)
    return await handler(request)


def caller(request: web.Request) -> Identity:
    """The authenticated caller of ``request`` (set by ``auth_middleware``)."""
    return request[IDENTITY]
