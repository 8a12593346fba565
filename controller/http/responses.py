"""JSON responses (the same fast, strict JSON as the agent protocol)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from o16n_agent.protocol import dumps


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(data),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def error_body(message: str, exception_type: str, status: int) -> dict[str, Any]:
    """The error shape: the core swagger's ``Error`` plus the per-service ``code``."""
    return {"message": message, "exceptionType": exception_type, "link": "", "code": status}
