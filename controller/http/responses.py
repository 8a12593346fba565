"""JSON responses, fast (orjson) and strict: never NaN or infinities, which are not JSON.

The controller's own helpers: the agent's wire protocol is the agent link's business."""

from __future__ import annotations

import json
from typing import Any

import orjson
from aiohttp import web


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are never written (orjson makes them null)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits: the stdlib handles them (and refuses NaN)
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")


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


def error_body(message: str, exception_type: str, status: int, request_id: str) -> dict[str, Any]:
    """The error shape: the core swagger's ``Error`` plus the per-service ``code``, and the
    request's id (``X-Request-Id``), which ties a client's error to the controller's log
    lines."""
    return {
        "message": message,
        "exceptionType": exception_type,
        "link": "",
        "code": status,
        "requestId": request_id,
    }
