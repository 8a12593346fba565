"""The access log (issue 13): one JSON line per request with the route's template (never a
matched route's path), method, status, duration, user, the client's address (as the
trusted proxies say), the request id, the user agent and the bytes sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from controller.app import create_app
from controller.logs import AccessLogger
from tests.conftest import bearer, login, make_settings
from tests.http.log_lines import JsonLines, json_lines


@pytest.fixture
def access() -> Iterator[JsonLines]:
    with json_lines("aiohttp.access") as lines:
        yield lines


async def test_access_lines(aiohttp_client: Any, data_dir: Path, access: JsonLines) -> None:
    settings = make_settings(data_dir, trusted_proxies="127.0.0.1/32")
    server = TestServer(create_app(settings))
    await server.start_server(access_log_class=AccessLogger)  # as ``o16n serve`` has it
    client = await aiohttp_client(server)
    admin = bearer((await login(client))["access_token"])

    resp = await client.get(
        "/services/Secret-Name/7",
        headers={**admin, "User-Agent": "probe/1.0", "X-Forwarded-For": "203.0.113.7"},
    )
    assert resp.status == 404
    line = access.lines[-1]
    assert line["msg"] == "request" and line["logger"] == "aiohttp.access"
    assert line["route"] == "/services/{name}/{version}"
    assert "Secret-Name" not in json.dumps(line)  # a matched route's path is not logged
    assert line["method"] == "GET" and line["status"] == 404
    assert line["user"] == "admin"
    assert line["remote"] == "203.0.113.7"  # the client, as the trusted proxy says
    assert line["requestId"] == resp.headers["X-Request-Id"]
    assert line["userAgent"] == "probe/1.0"
    assert isinstance(line["ms"], float) and line["ms"] >= 0
    assert line["bytes"] >= len(await resp.read())

    # no route: no template, so the path (never the query string), and no user
    resp = await client.get("/no/such/route?access_token=s3cret", headers={"X-Request-Id": "r-1"})
    assert resp.status == 404
    line = access.lines[-1]
    assert line["route"] is None and line["path"] == "/no/such/route"
    assert "s3cret" not in json.dumps(line)
    assert line["user"] is None and line["requestId"] == "r-1"
    assert line["remote"] == "127.0.0.1"  # no X-Forwarded-For: the peer

    # a wrong method: no route matched, but the path is a route's, and may hold a secret
    resp = await client.get("/login/refreshToken/s3cret-refresh")
    assert resp.status == 405
    line = access.lines[-1]
    assert line["route"] == "/login/refreshToken/{refreshToken}", line
    assert "s3cret" not in json.dumps(line)

    # a successful request with a body, and the Expect refusal that runs before routing
    resp = await client.post("/login", json={"username": "admin", "password": "nope"})
    assert access.lines[-1]["route"] == "/login" and access.lines[-1]["status"] == 401
    resp = await client.post("/login", data=b"{}", headers={"Expect": "other"})
    assert resp.status == 417
    assert access.lines[-1]["requestId"] == resp.headers["X-Request-Id"]


async def test_a_request_aiohttp_refuses_itself_is_logged(
    data_dir: Path, access: JsonLines
) -> None:
    """A malformed request never reaches the router: its line has no route, and logging it
    must not fail (the line is written while the connection is answered)."""
    server = TestServer(create_app(make_settings(data_dir)))
    await server.start_server(access_log_class=AccessLogger)
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"NOT A REQUEST\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:80]
        lines = [line for line in access.lines if line["status"] == 400]
        assert lines, access.lines
        assert lines[-1]["route"] is None and lines[-1]["requestId"]
    finally:
        await server.close()
