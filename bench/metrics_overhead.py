"""What the metrics cost one request: the HTTP middleware and the consume outcome timer,
around a handler that does nothing, against the bare handler (no server, no Docker).

    PYTHONPATH=. python -m bench.metrics_overhead [--requests 200000]

The controller spends about 0.3 ms of CPU per consume, so 3 % of it is about 9 µs: this
prints the microseconds each layer adds per request, and the time of one scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import generate_latest

from controller.metrics.definitions import REGISTRY, consume_child
from controller.metrics.http import metrics_middleware, succeeded, timed


async def _handler(request: web.Request) -> web.StreamResponse:
    return RESPONSE


RESPONSE = web.Response(status=200)


async def _request(app: web.Application) -> web.Request:
    request = make_mocked_request("POST", "/api/Iris/1", app=app)
    match_info = await app.router.resolve(request)
    match_info.add_app(app)
    request._match_info = match_info
    return request


async def _per_call(call: Any, request: web.Request, n: int) -> float:
    """Best of five runs of ``n`` calls, in µs per call."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            await call(request)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


async def main(n: int) -> None:
    app = web.Application()
    app.router.add_post("/api/{name}/{version}", _handler)
    request = await _request(app)

    async def through_middleware(r: web.Request) -> web.StreamResponse:
        return await metrics_middleware(r, _handler)

    bare = await _per_call(_handler, request, n)
    middleware = await _per_call(through_middleware, request, n)
    timed(lambda r, outcome: consume_child("Iris", "1", outcome))(_handler)
    succeeded(request, True)  # as the consume handler says of its result
    outcome = await _per_call(through_middleware, request, n)
    print(f"bare handler:                 {bare:6.2f} µs/request")
    print(f"+ metrics_middleware:         {middleware - bare:6.2f} µs/request")
    print(f"+ a @timed route's outcome:   {outcome - middleware:6.2f} µs/request")
    start = time.perf_counter()
    text = generate_latest(REGISTRY)
    print(
        f"one scrape of the process:    {(time.perf_counter() - start) * 1e3:6.2f} ms, "
        f"{len(text)} bytes"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().requests))
