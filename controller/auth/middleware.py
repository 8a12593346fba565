"""The bearer-token check. It only attaches who is calling; handlers decide what they may do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.auth.roles import IDENTITY, Identity
from controller.auth.service import AUTH
from controller.errors import UnauthorizedError

F = TypeVar("F", bound=Callable[..., Any])
_PUBLIC = "__o16n_public__"


def public(handler: F) -> F:
    """Mark a handler as reachable without a bearer token (only the ``/login`` family and
    the web console's static files, which hold no data)."""
    setattr(handler, _PUBLIC, True)
    return handler


def is_public(request: web.Request) -> bool:
    """Whether ``request`` is served without a bearer token (a ``/login`` route, a console
    file, or no route: a 404 or 405 that needs no token to be told)."""
    match_info = request.match_info
    return match_info.http_exception is not None or getattr(match_info.handler, _PUBLIC, False)


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
    request[IDENTITY] = request.app[AUTH].authenticate(token.strip())
    return await handler(request)


def caller(request: web.Request) -> Identity:
    """The authenticated caller of ``request`` (set by ``auth_middleware``)."""
    return request[IDENTITY]
