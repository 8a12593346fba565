"""What a request body may cost before and while it is read.

* A request that needs no token (``/login``, ``/login/refreshToken``, or no route at all)
  may send at most ``max_anonymous_body_bytes``; any other at most ``max_body_bytes``, and
  only once ``auth_middleware`` (which runs first) accepted its token.
* The limit is checked against ``Content-Length`` before a byte of the body is read, and
  while it is read (a chunked body has no length): ``request.read()`` stops at the
  request's ``client_max_size``, and for an anonymous request that is the small limit.
  Either way the answer is a 413 with the JSON error body, and the connection is closed.
* Errors of aiohttp's body parsers (a malformed multipart part: a NUL in a header,
  ``LineTooLong``; a broken chunked encoding) are a 400 naming what was wrong.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestPayloadError

from controller.auth.middleware import is_public
from controller.errors import BadRequestError, PayloadTooLargeError
from controller.keys import SETTINGS


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
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit, anonymous) from None
    except (HttpProcessingError, RequestPayloadError) as exc:
        raise BadRequestError(f"the request body is malformed: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    """A short account of a parser error (its own message may quote a 512 KiB line)."""
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    text = f"{type(exc).__name__}: {message}"
    return text if len(text) <= 200 else text[:200] + "…"
