"""HTTP hardening: security headers, connection timeouts, the open-file limit, names."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.security.rawhttp import closed_within, connect, head, read_response

CSP = "default-src 'none'; frame-ancestors 'none'"


async def test_every_response_carries_nosniff_and_a_csp(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    for method, path, headers in [
        ("GET", "/status", admin_headers),
        ("GET", "/swagger.json", admin_headers),
        ("GET", "/no/such/route", {}),
        ("POST", "/login", {}),
        ("GET", "/sessions", {}),
    ]:
        resp = await client.request(method, path, headers=headers)
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path
        assert resp.headers["Content-Security-Policy"] == CSP, path


@pytest.fixture
async def quick_client(aiohttp_client: Any, data_dir: Any) -> TestClient[Any, Any]:
    settings = make_settings(data_dir, http_idle_timeout=2, http_body_timeout=2)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def test_an_idle_connection_is_closed(quick_client: TestClient[Any, Any]) -> None:
    reader, writer = await connect(quick_client)
    try:
        started = time.monotonic()
        assert await closed_within(reader, 10)
        assert 1.5 < time.monotonic() - started < 5
    finally:
        writer.close()


async def test_slow_headers_are_cut_off(quick_client: TestClient[Any, Any]) -> None:
    """Slow loris: request headers sent one byte a second never finish."""
    reader, writer = await connect(quick_client)
    try:
        started = time.monotonic()
        closed = asyncio.ensure_future(closed_within(reader, 15))
        for byte in b"GET /status HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 100:
            if closed.done():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(1)
        assert await closed
        assert time.monotonic() - started < 5
    finally:
        writer.close()


async def test_a_stalled_body_is_a_408_and_closes(quick_client: TestClient[Any, Any]) -> None:
    token = (await login(quick_client))["access_token"]
    reader, writer = await connect(quick_client)
    try:
        started = time.monotonic()
        writer.write(
            head(
                "POST",
                "/sessions",
                {"Authorization": f"Bearer {token}", "Content-Length": 100},
            )
        )
        writer.write(b'{"name": ')  # and then nothing
        await writer.drain()
        resp = await read_response(reader, timeout=10)
        assert resp.status == 408 and resp.json()["exceptionType"] == "RequestTimeoutError"
        assert time.monotonic() - started < 5
        assert await closed_within(reader, 15)
    finally:
        writer.close()


async def test_a_dripped_anonymous_body_is_a_408(quick_client: TestClient[Any, Any]) -> None:
    """A login body sent a byte every half second never completes: cut at the deadline."""
    reader, writer = await connect(quick_client)
    try:
        started = time.monotonic()
        writer.write(head("POST", "/login", {"Content-Length": 1000}))
        answer = asyncio.ensure_future(read_response(reader, timeout=15))
        while not answer.done() and time.monotonic() - started < 12:
            writer.write(b" ")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.5)
        resp = await answer
        assert resp.status == 408, resp.body
        assert time.monotonic() - started < 5
    finally:
        writer.close()


async def test_a_quick_client_is_not_cut_off(quick_client: TestClient[Any, Any]) -> None:
    await login(quick_client)
    await asyncio.sleep(1)
    await login(quick_client)  # the same keep-alive connection, still within the idle limit


@pytest.mark.parametrize("name", ["__builtins__", "__class__", "None", "class", "1x", "a-b"])
async def test_reserved_workspace_object_names_are_refused(
    client: TestClient[Any, Any], admin_headers: dict[str, str], name: str
) -> None:
    session_id = "00000000-0000-0000-0000-000000000000"  # the name is checked first
    base = f"/sessions/{session_id}/workspace/{name}"
    for method in ("GET", "POST", "DELETE"):
        resp = await client.request(method, base, data=b"x", headers=admin_headers)
        assert resp.status == 400, (method, name, await resp.text())
        assert (await resp.json())["exceptionType"] == "BadRequestError"
    execute = f"/sessions/{session_id}/execute"
    for body in (
        {"code": "1", "inputParameters": [{"name": name, "value": 1}]},
        {"code": "1", "outputParameters": [name]},
    ):
        resp = await client.post(execute, json=body, headers=admin_headers)
        assert resp.status == 400, (body, await resp.text())


async def test_ordinary_workspace_object_names_pass(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = "00000000-0000-0000-0000-000000000000"
    for name in ("x", "_private", "__mangled", "match", "df_2"):
        resp = await client.get(f"/sessions/{session_id}/workspace/{name}", headers=admin_headers)
        assert resp.status == 404, name  # the name passed; the session does not exist


async def test_the_open_file_limit_is_raised_at_start_and_reported(
    aiohttp_client: Any, settings: Any
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, 1024) - 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        client = await aiohttp_client(create_app(settings))
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        admin = bearer((await login(client))["access_token"])
        node = (await (await client.get("/status", headers=admin)).json())["components"]
        details = node["openFiles"]["details"]
        assert details["softLimit"] == details["hardLimit"] == hard
        assert 0 < details["open"] < hard
        assert node["openFiles"]["statusCode"] == ("pass" if hard >= 4096 else "warn")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, low), hard))
