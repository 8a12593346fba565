"""Pass one request on to another controller of the group, and its answer back, streamed.

A request for a session that another controller holds goes to that controller's internal
URL as it came: method, path, query, body and the caller's own headers (it checks the
token again; tokens are good on every controller). Neither body is held in memory: each
moves in chunks, so the body limits of both controllers hold. Hop-by-hop headers stay
behind; ``FORWARDED_BY`` marks the hop, and a controller never passes on a request that
carries it (no loops whatever the group believes). A controller that cannot be reached is
a 503 with ``Retry-After``: it may be dying, and another takes its sessions over soon.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from controller.errors import ServiceUnavailableError

log = logging.getLogger(__name__)

#: The header a forwarded request carries: the instance that passed it on.
FORWARDED_BY = "X-O16n-Forwarded-By"
#: Seconds to connect to another controller before it counts as unreachable.
CONNECT_TIMEOUT = 3.0
#: Seconds a client is told to wait before trying again when a controller is unreachable.
RETRY_AFTER = 2.0
CHUNK = 64 * 1024

#: RFC 9110 §7.6.1's hop-by-hop headers, and those the client library sets itself.
_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Expect",  # this controller answered it already
    )
)


def forwarded(request: web.Request) -> bool:
    """Whether another controller passed this request on (it is never passed on again)."""
    return FORWARDED_BY in request.headers


def client_session(read_timeout: float | None = None) -> aiohttp.ClientSession:
    """The session forwards go through: no total timeout (an execution takes as long as
    its limit allows) but ``read_timeout`` seconds at most without a byte (a holder that
    hangs, not dies, would hold the request for ever), bodies passed on as they are (no
    decompression), no cookies."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=read_timeout),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
    )


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    while chunk := await request.content.read(CHUNK):
        yield chunk


async def forward(
    session: aiohttp.ClientSession, request: web.Request, base_url: str, me: str
) -> web.StreamResponse:
    """``request`` answered by the controller at ``base_url``; ``me`` names this one."""
    headers = CIMultiDict(
        (name, value)
        for name, value in request.headers.items()
        if name.lower() not in _HOP and name.lower() != "x-forwarded-for"
    )
    headers[FORWARDED_BY] = me
    peer = request.remote or ""
    previous = ", ".join(request.headers.getall("X-Forwarded-For", []))
    headers["X-Forwarded-For"] = f"{previous}, {peer}" if previous else peer
    url = base_url.rstrip("/") + request.rel_url.raw_path_qs
    data = _body(request) if request.body_exists else None
    try:
        upstream = await session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        log.warning("forwarding failed", extra={"url": base_url, "error": str(exc)})
        raise ServiceUnavailableError(
            "the controller holding this session does not answer; if it stopped, another "
            "controller takes the session over within seconds: try again shortly",
            retry_after=RETRY_AFTER,
        ) from None
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP and name.lower() != "content-encoding":
                response.headers.add(name, value)
        encoding = upstream.headers.get("Content-Encoding")
        if encoding:  # passed through as it came, never encoded again here
            response.headers["Content-Encoding"] = encoding
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError):
            # the holder went mid-answer: the status is sent, so the client must see a cut
            # connection, never a complete-looking body (nor an error answer inside it)
            log.warning("a forwarded answer was cut", extra={"url": base_url})
            if request.transport is not None:
                request.transport.abort()
            return response  # not an error to answer: there is no one left to answer
        await response.write_eof()
        return response
