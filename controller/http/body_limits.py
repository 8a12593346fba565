"""What a request body may cost before and while it is read: its size and its pace.

* A request that needs no token (``/login``, ``/login/refreshToken``, or no route at all)
  may send at most ``max_anonymous_body_bytes``; any other at most ``max_body_bytes``, and
  only once ``auth_middleware`` (which runs first) accepted its token.
* The limit is checked against ``Content-Length`` before a byte of the body is read, and
  while it is read (a chunked body has no length): ``request.read()`` stops at the
  request's ``client_max_size``, and for an anonymous request that is the small limit.
  Either way the answer is a 413 with the JSON error body, and the connection is closed.
* A body that sends nothing for ``http_body_timeout`` seconds while the controller waits
  for it (the socket is being read: not a pause of ours) is a 408 and the connection
  closes; so is an anonymous body not complete within that time (it is small: only a
  slow-loris client drips one for longer). Idle connections and slow request headers are
  closed by aiohttp's keep-alive timer (``http_idle_timeout``, armed in ``create_app``).
* Errors of aiohttp's body parsers (a malformed multipart part: a NUL in a header,
  ``LineTooLong``; a broken chunked encoding) are a 400 naming what was wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from controller.errors import BadRequestError, PayloadTooLargeError, RequestTimeoutError
from controller.http.middlewares import request_id_of
from controller.http.public import is_public
from controller.http.responses import dumps, error_body
from controller.settings import SETTINGS


def _too_large(limit: int, anonymous: bool) -> PayloadTooLargeError:
    who = "a request without an access token" if anonymous else "a request"
    return PayloadTooLargeError(f"the body of {who} is larger than the limit of {limit} bytes")


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    anonymous = is_public(request)
    limit = int(settings.max_body_bytes)
    if anonymous:
        limit = min(limit, int(settings.max_anonymous_body_bytes))
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit, anonymous)
    if request.client_max_size != limit and request.body_exists:
        request = request.clone(client_max_size=limit)
    watchdog = None
    if request.body_exists and not request.content.is_eof():
        watchdog = _BodyWatchdog(request, settings.http_body_timeout, whole=anonymous)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit, anonymous) from None
    except (HttpProcessingError, RequestPayloadError) as exc:
        raise BadRequestError(f"the request body is malformed: {_describe(exc)}") from None
    finally:
        if watchdog is not None:
            watchdog.cancel()


async def expect_small_body(request: web.Request) -> web.StreamResponse | None:
    """The ``expect_handler`` of the anonymous routes: ``100 Continue`` only for a body
    within their limit. Above it the client is not invited to send anything: the request
    goes straight on to ``body_limit_middleware``, which answers 413."""
    settings = request.app[SETTINGS]
    limit = min(int(settings.max_body_bytes), int(settings.max_anonymous_body_bytes))
    if request.content_length is not None and request.content_length > limit:
        return None
    return await expect_continue(request)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Every other route's ``expect_handler`` (``with_expect_continue``): aiohttp's default,
    but its 417 is the JSON error body with the request id, not aiohttp's text. It runs
    before any middleware, so it makes that body itself."""
    if request.version == HttpVersion11:
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            message = "the only Expect known here is 100-continue"
            body = error_body(message, "ExpectationFailedError", 417, request_id_of(request))
            raise web.HTTPExpectationFailed(
                text=dumps(body).decode(), content_type="application/json"
            )
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (as aiohttp's: the response's bytes start here)
    return None


def with_expect_continue(table: Iterable[web.AbstractRouteDef]) -> list[web.AbstractRouteDef]:
    """``table``'s routes, those without an ``expect_handler`` of their own given
    :func:`expect_continue`: aiohttp has no setting for the default one."""
    return [
        web.RouteDef(d.method, d.path, d.handler, {"expect_handler": expect_continue, **d.kwargs})
        if isinstance(d, web.RouteDef)
        else d
        for d in table
    ]


def _describe(exc: Exception) -> str:
    """A short account of a parser error (its own message may quote a 512 KiB line)."""
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= 200 else text[:200] + "…"


class _BodyWatchdog:
    """Ends a request whose body stalls: no byte for ``timeout`` seconds while the socket
    is being read. (When the handler does not keep up, aiohttp pauses reading the socket;
    that wait is ours, not the client's, and does not count.) With ``whole``, the body must
    also be complete within ``timeout`` seconds."""

    def __init__(self, request: web.Request, timeout: float, *, whole: bool) -> None:
        self._request = request
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._seen = request.content.total_raw_bytes
        self._since = self._loop.time()
        self._deadline = self._since + timeout if whole else None
        self._handle = self._loop.call_later(min(timeout, 1.0), self._check)

    def cancel(self) -> None:
        self._handle.cancel()

    def _check(self) -> None:
        content = self._request.content
        if content.is_eof() or content.exception() is not None:
            return
        now = self._loop.time()
        transport = self._request.transport
        seen = content.total_raw_bytes
        if seen != self._seen or transport is None or not transport.is_reading():
            self._seen, self._since = seen, now
        if now - self._since >= self._timeout or (
            self._deadline is not None and now >= self._deadline
        ):
            content.set_exception(
                RequestTimeoutError(
                    f"the request body did not arrive in time ({self._timeout:g} s); send it faster"
                )
            )
            return
        self._handle = self._loop.call_later(min(self._timeout, 1.0), self._check)
