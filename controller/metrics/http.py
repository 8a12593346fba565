"""The HTTP side of the metrics: every request by route template, and the consume and
execute outcomes.

``metrics_middleware`` is the outermost middleware, so it sees the status the client
gets, errors included. It labels a request with its route's template
(``/api/{name}/{version}``), never its path, and ``unmatched`` when no route matched: a
client choosing paths, or methods (``OTHER`` outside the usual ones), cannot make series.
A handler marked ``@timed(child_of)`` (consume, execute) is also observed in the histogram
child of its outcome, by the same middleware with the same clock: no wrapper of its own.
It costs a few microseconds a request (``bench/metrics_overhead.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import Histogram

from controller.metrics.definitions import (
    InFlight,
    Outcome,
    execute_child,
    http_child,
    outcome_of,
)

UNMATCHED = "unmatched"
#: the code of a request whose client went away before it was answered (nginx's)
CLIENT_GONE = 499
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TIMED = "__o16n_timed__"

#: Whether the code a 200 answer ran succeeded (``succeeded``); a 200 without it counts as one.
RESULT_SUCCESS = web.RequestKey("metrics_result_success", bool)

#: The histogram child of a request's outcome, or ``None`` to leave it uncounted (a consume
#: of a service that does not exist: no series for a name a client made up).
ChildOf = Callable[[web.Request, Outcome], Histogram | None]
F = TypeVar("F", bound=Callable[..., Any])


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
        elapsed = perf_counter() - start
        match_info = request.match_info
        resource = match_info.route.resource
        method = request.method
        http_child(
            UNMATCHED if resource is None else resource.canonical,
            method if method in _METHODS else "OTHER",
            status,
        ).observe(elapsed)
        child_of: ChildOf | None = getattr(match_info.handler, _TIMED, None)
        if child_of is not None and status != CLIENT_GONE:
            child = child_of(request, outcome_of(status, request.get(RESULT_SUCCESS, True)))
            if child is not None:
                child.observe(elapsed)


def timed(child_of: ChildOf) -> Callable[[F], F]:
    """Mark a handler: ``metrics_middleware`` observes each of its requests in the child
    ``child_of`` gives for the request's outcome (``outcome_of`` its final status)."""

    def mark(handler: F) -> F:
        setattr(handler, _TIMED, child_of)
        return handler

    return mark


def succeeded(request: web.Request, success: bool) -> None:
    """Tell the metrics whether the user's code succeeded (``failure`` when it did not)."""
    request[RESULT_SUCCESS] = success


#: ``POST /sessions/{id}/execute``: no label but the outcome (a session id is no label).
timed_execute = timed(lambda request, outcome: execute_child(outcome))
