"""Which routes need no bearer token: marked where they are declared, read by the token
check (``auth.middleware``) and by the body limits (such a request may send little)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

F = TypeVar("F", bound=Callable[..., Any])
_PUBLIC = "__o16n_public__"


def public(handler: F) -> F:
    """Mark a handler as reachable without a bearer token (only the ``/login`` family and
    the web console's static files, which hold no data), or as one that checks its bearer
    itself (``/metrics``: an access token or the metrics token)."""
    setattr(handler, _PUBLIC, True)
    return handler


def is_public(request: web.Request) -> bool:
    """Whether ``request`` is served without a bearer token (a ``/login`` route, a console
    file, or no route: a 404 or 405 that needs no token to be told)."""
    match_info = request.match_info
    return match_info.http_exception is not None or getattr(match_info.handler, _PUBLIC, False)
