"""What every ``/admin`` handler shares: the Owner check and query-string validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from controller.auth.middleware import caller
from controller.auth.roles import Identity
from controller.http.bodies import validate
from controller.roles import Role

M = TypeVar("M", bound=BaseModel)


def owner(request: web.Request) -> Identity:
    """The caller, who must be an Owner (403 otherwise; no token was 401 already)."""
    identity = caller(request)
    identity.require(Role.OWNER, "administration")
    return identity


def query(request: web.Request, model: type[M]) -> M:
    """The query string validated as ``model`` (400 naming the parameter)."""
    return validate(model, dict(request.query))


def iso(at: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``2026-12-01T23:54:00Z``)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
