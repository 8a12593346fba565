"""The outermost middleware: every error becomes ``{"message", "exceptionType"}``.

Whatever happens below becomes JSON with the status its error class names, and no
reply carries a controller traceback (the log does).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.errors import O16nError, translate
from controller.http.responses import error_body, json_response

log = logging.getLogger(__name__)


def _error(
    status: int, message: str, exception_type: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(
        error_body(message, exception_type, status), status=status, headers=headers
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except O16nError as exc:
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        if exc.status >= 500:
            log.warning("request failed", extra={"path": request.path, "error": exc.message})
        return _error(exc.status, exc.message, exc.exception_type, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        known = translate(exc)  # a full disk (507) or a locked database (503), wherever raised
        if known is not None:
            log.warning("request failed", extra={"path": request.path, "error": repr(exc)})
            headers = {"Retry-After": str(int(known.retry_after))} if known.retry_after else None
            return _error(known.status, known.message, known.exception_type, headers)
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return _error(
            500, "internal server error; the controller logged the details", "InternalError"
        )


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        message = f"no route matches {request.method} {request.path}"
        kind = "NotFoundError"
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
        kind = "MethodNotAllowedError"
    elif exc.status == 413:
        message = f"the request body is larger than the limit of {request.client_max_size} bytes"
        kind = "PayloadTooLargeError"
    else:
        message = exc.text or exc.reason
        kind = type(exc).__name__
    return _error(exc.status, message, kind, headers)
