"""JSON responses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_body(message: str, exception_type: str, status: int) -> dict[str, Any]:
    """The error shape: the core swagger's ``Error`` plus the per-service ``code``."""
    return {"message": message, "exceptionType": exception_type, "link": "", "code": status}
