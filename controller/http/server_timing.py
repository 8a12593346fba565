"""``Server-Timing`` on the responses of the routes that run code: consume, execute and
session create, errors included. The phases are recorded by the layers that do the work
(``controller.timing``); this middleware starts the recorder and writes the header.

Installed only when ``O16N_SERVER_TIMING`` is on, so that off costs nothing at all.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.timing import TIMING, Timing

HEADER = "Server-Timing"

#: (method, route template) of the timed requests; batches are asynchronous, not timed
TIMED = frozenset(
    {
        ("POST", "/api/{name}/{version}"),
        ("POST", "/sessions/{id}/execute"),
        ("POST", "/sessions"),
    }
)


@web.middleware
async def server_timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Time the request, if its route is timed, and say where its time went. It sits
    outside ``error_middleware``, so an error's response carries the header too."""
    resource = request.match_info.route.resource
    if resource is None or (request.method, resource.canonical) not in TIMED:
        return await handler(request)
    timing = Timing()
    TIMING.set(timing)  # each request runs in a task of its own: no reset needed
    response = await handler(request)
    response.headers[HEADER] = timing.header()
    return response
