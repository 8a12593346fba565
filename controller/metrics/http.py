"""The HTTP side of the metrics: every request by route template, and the consume and
execute outcomes.

``metrics_middleware`` is the outermost middleware, so it sees the status the client
gets, errors included. It labels a request with its route's template
(``/api/{name}/{version}``), never its path, and ``unmatched`` when no route matched: a
client choosing paths, or methods (``OTHER`` outside the usual ones), cannot make series.
A request costs a few microseconds (``bench``-measured: see the README's Metrics section).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Histogram

from controller.errors import O16nError, translate
from controller.metrics.definitions import (
    InFlight,
    Outcome,
    execute_child,
    http_child,
    outcome_of,
)
from controller.settings import SETTINGS

UNMATCHED = "unmatched"
#: the code of a request whose client went away before it was answered (nginx's)
CLIENT_GONE = 499
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = perf_counter()
    InFlight.count += 1
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect: the error middleware lets those through
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        InFlight.count -= 1
        resource = request.match_info.route.resource
        method = request.method
        http_child(
            UNMATCHED if resource is None else resource.canonical,
            method if method in _METHODS else "OTHER",
            status,
        ).observe(perf_counter() - start)


# --- consume and execute outcomes ------------------------------------------------------------

#: Whether the code a 200 answer ran succeeded (``succeeded``); a 200 without it counts as one.
RESULT_SUCCESS = web.RequestKey("metrics_result_success", bool)

#: The histogram child of a request's outcome, or ``None`` to leave it uncounted (a consume
#: of a service that does not exist: no series for a name a client made up).
ChildOf = Callable[[web.Request, Outcome], Histogram | None]
Wrapped = Callable[[web.Request], Awaitable[web.StreamResponse]]


def succeeded(request: web.Request, success: bool) -> None:
    """Tell ``@timed`` whether the user's code succeeded (``failure`` when it did not)."""
    request[RESULT_SUCCESS] = success


def timed(child_of: ChildOf) -> Callable[[Wrapped], Wrapped]:
    """Time the handler into the histogram child of its outcome (``outcome_of`` its status)."""

    def wrap(handler: Wrapped) -> Wrapped:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            if not request.app[SETTINGS].metrics:
                return await handler(request)
            start = perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except (O16nError, web.HTTPException) as exc:
                status = exc.status
                raise
            except asyncio.CancelledError:
                status = 0  # the client went away: no outcome to tell
                raise
            except Exception as exc:
                known = translate(exc)
                status = known.status if known is not None else 500
                raise
            finally:
                if status:
                    outcome = outcome_of(status, request.get(RESULT_SUCCESS, True))
                    found = child_of(request, outcome)
                    if found is not None:
                        found.observe(perf_counter() - start)

        return run

    return wrap


#: ``POST /sessions/{id}/execute``: no label but the outcome (a session id is no label).
timed_execute = timed(lambda request, outcome: execute_child(outcome))
