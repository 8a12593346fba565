"""The outer middlewares: a request id for every request, and every error as
``{"message", "exceptionType"}``.

Whatever happens below becomes JSON with the status its error class names. No reply
carries a controller traceback or an agent's internal detail: a 500 says only
"internal error" and the request id, and the log line with the detail carries that id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.errors import O16nError, translate
from controller.http.request_id import REQUEST_ID, REQUEST_ID_KEY
from controller.http.responses import error_body, json_response

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

#: Sent with every response: nothing we answer is a page to render or a script to run.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the request: a well-formed ``X-Request-Id`` from the client (a proxy's), else a
    new one. Every log line of the request carries it (``controller.http.request_id``)."""
    REQUEST_ID.set(request_id_of(request))  # each request runs in its own task: no reset
    return await handler(request)


#: this process's random half of the ids it makes: ids from several controllers never meet
_ID_PREFIX = secrets.token_hex(4)
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """16 hex digits, unique to this process: its random prefix and a counter. A request
    id names a request in the logs and is no secret, so it need not cost each request a
    read of the kernel's random pool (``secrets.token_hex``, a syscall)."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


def request_id_of(request: web.BaseRequest) -> str:
    """The request's id, named on first use: what answers before the middlewares run (an
    ``Expect`` handler's refusal) has one too."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _WELL_FORMED_ID.fullmatch(given) else new_request_id()
        request[REQUEST_ID_KEY] = request_id
    return request_id


async def add_response_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers and the request id on every response."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers[REQUEST_ID_HEADER] = request_id_of(request)


def _error(
    request: web.Request,
    status: int,
    message: str,
    exception_type: str,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = error_body(message, exception_type, status, request_id_of(request))
    return json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except O16nError as exc:
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        if exc.status == 500:  # its message may hold an agent's text: the log keeps it
            log.error(
                "request failed",
                extra={**_where(request), "error": exc.message, **_request_id(request)},
            )
            return _internal_error(request, exc.exception_type)
        if exc.status > 500:
            log.warning("request failed", extra={**_where(request), "error": exc.message})
        response = _error(request, exc.status, exc.message, exc.exception_type, headers)
        if exc.status in (408, 413):
            response.force_close()  # the rest of that body is not worth waiting for
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        known = translate(exc)  # a full disk (507) or a locked database (503), wherever raised
        if known is not None:
            log.warning(
                "request failed",
                extra={**_where(request), "error": repr(exc), **_request_id(request)},
            )
            headers = {"Retry-After": str(int(known.retry_after))} if known.retry_after else None
            return _error(request, known.status, known.message, known.exception_type, headers)
        log.exception(
            "unhandled error",
            extra={"method": request.method, **_where(request), **_request_id(request)},
        )
        return _internal_error(request, "InternalError")


def _where(request: web.Request) -> dict[str, str]:
    """Where a failed request went: its route's template, as in the access log, not its
    path, which can hold a secret (``DELETE /login/refreshToken/{refreshToken}``)."""
    resource = request.match_info.route.resource
    if resource is not None:
        return {"route": resource.canonical}
    return {"path": request.path[:200]}


def _request_id(request: web.Request) -> dict[str, str]:
    request_id = request.get(REQUEST_ID_KEY)
    return {"requestId": request_id} if request_id is not None else {}


def _internal_error(request: web.Request, exception_type: str) -> web.Response:
    """A 500 that says nothing of what failed: the log line with that id does."""
    message = f"internal error (request id {request_id_of(request)})"
    return _error(request, 500, message, exception_type)


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
    return _error(request, exc.status, message, kind, headers)
