"""Passing a request on to another controller: a holder that goes away mid-answer."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.http.forward import client_session, forward
from controller.http.middlewares import error_middleware


async def test_an_answer_cut_mid_body_cuts_the_clients_connection(aiohttp_client: Any) -> None:
    async def dying(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"partial ")
        assert request.transport is not None
        request.transport.abort()  # the holder is killed here
        return response

    upstream_app = web.Application()
    upstream_app.router.add_get("/sessions/s/files/f", dying)
    upstream = TestServer(upstream_app)
    await upstream.start_server()
    session = client_session()

    async def passing_on(request: web.Request) -> web.StreamResponse:
        return await forward(session, request, str(upstream.make_url("/")), "me")

    edge = web.Application(middlewares=[error_middleware])
    edge.router.add_get("/sessions/s/files/f", passing_on)
    client = await aiohttp_client(edge)
    try:
        resp = await client.get("/sessions/s/files/f")
        assert resp.status == 200  # sent before the holder went
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # cut, never a whole body with an error inside it
    finally:
        await session.close()
        await upstream.close()
