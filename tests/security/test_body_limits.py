"""Anonymous requests may send only a small body; any body over its limit is refused at its
Content-Length, or while it is read (chunked), before it is all sent; malformed multipart is
a 400. Every refusal is the JSON error body."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import login, make_settings
from tests.security.rawhttp import connect, head, read_response
from tests.sessions.conftest import new_session

BIG = 10 * 1024**2


def _assert_413(status: int, body: dict[str, Any]) -> None:
    assert status == 413, body
    assert body["exceptionType"] == "PayloadTooLargeError" and "limit" in body["message"]


@pytest.fixture
async def small_client(aiohttp_client: Any, data_dir: Any) -> TestClient[Any, Any]:
    settings = make_settings(data_dir, max_body_bytes=1024**2)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


@pytest.mark.parametrize("path", ["/login", "/login/refreshToken"])
async def test_a_large_anonymous_body_is_refused_at_its_content_length(
    client: TestClient[Any, Any], path: str
) -> None:
    reader, writer = await connect(client)
    try:
        started = time.monotonic()
        writer.write(
            head("POST", path, {"Content-Type": "application/json", "Content-Length": BIG})
        )
        writer.write(b"{" + b" " * 65535)  # a little of it; the rest is never sent
        await writer.drain()
        resp = await read_response(reader, timeout=5)
        _assert_413(resp.status, resp.json())
        assert str(32 * 1024) in resp.json()["message"]
        assert time.monotonic() - started < 5
        assert resp.headers.get("connection") == "close"
    finally:
        writer.close()
    await login(client)  # the controller goes on


async def test_a_large_chunked_anonymous_body_is_refused_while_read(
    client: TestClient[Any, Any],
) -> None:
    reader, writer = await connect(client)
    try:
        writer.write(
            head(
                "POST",
                "/login",
                {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            )
        )
        chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
        sent = 0
        answer = asyncio.ensure_future(read_response(reader, timeout=30))
        while not answer.done() and sent < BIG:
            writer.write(chunk)
            await writer.drain()
            sent += 16384
            await asyncio.sleep(0.001)
        if not answer.done():
            writer.write(b"0\r\n\r\n")
        resp = await answer
        _assert_413(resp.status, resp.json())
        assert sent < 1024**2, f"the server read {sent} bytes before refusing"
    finally:
        writer.close()


async def test_anonymous_calls_to_other_routes_are_refused_before_their_body(
    client: TestClient[Any, Any],
) -> None:
    reader, writer = await connect(client)
    try:
        writer.write(head("POST", "/sessions", {"Content-Length": BIG}))
        await writer.drain()
        resp = await read_response(reader, timeout=5)
        assert resp.status == 401 and resp.json()["exceptionType"] == "UnauthorizedError"
    finally:
        writer.close()


async def test_a_small_login_body_still_works(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/login", json={"username": "admin", "password": "x" * 1000, "pad": " " * 10_000}
    )
    assert resp.status == 401


async def test_an_upload_over_the_limit_is_refused_at_its_content_length(
    small_client: TestClient[Any, Any],
) -> None:
    token = (await login(small_client))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    session_id = await new_session(small_client, headers)
    reader, writer = await connect(small_client)
    try:
        writer.write(
            head(
                "POST",
                f"/sessions/{session_id}/files",
                {
                    **headers,
                    "Content-Type": "multipart/form-data; boundary=xyz",
                    "Content-Length": BIG,
                },
            )
        )
        writer.write(b"--xyz\r\n")
        await writer.drain()
        resp = await read_response(reader, timeout=5)
        _assert_413(resp.status, resp.json())
        assert str(1024**2) in resp.json()["message"]
    finally:
        writer.close()


async def test_malformed_multipart_is_a_400(
    small_client: TestClient[Any, Any],
) -> None:
    token = (await login(small_client))["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    session_id = await new_session(small_client, headers)
    bodies = {
        "a NUL in the file name": (
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a\x00b"\r\n\r\n'
            b"data\r\n--xyz--\r\n"
        ),
        "a part header line over 512 KiB": (
            b"--xyz\r\nX-Long: " + b"a" * (600 * 1024) + b"\r\n"
            b'Content-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
            b"data\r\n--xyz--\r\n"
        ),
    }
    for case, body in bodies.items():
        resp = await small_client.post(
            f"/sessions/{session_id}/files",
            data=body,
            headers={**headers, "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        payload = await resp.json()
        assert resp.status == 400, (case, payload)
        assert payload["exceptionType"] == "BadRequestError", case
        assert len(payload["message"]) < 1000, case
    # and a well-formed upload still works
    form = aiohttp.FormData()
    form.add_field("file", b"hello", filename="ok.txt")
    resp = await small_client.post(f"/sessions/{session_id}/files", data=form, headers=headers)
    assert resp.status == 201, await resp.text()


async def test_expect_100_continue_is_not_granted_to_a_large_anonymous_body(
    client: TestClient[Any, Any],
) -> None:
    for length, first_status in ((BIG, 413), (100, 100)):
        reader, writer = await connect(client)
        try:
            writer.write(
                head(
                    "POST",
                    "/login",
                    {
                        "Content-Type": "application/json",
                        "Content-Length": length,
                        "Expect": "100-continue",
                    },
                )
            )
            await writer.drain()
            async with asyncio.timeout(5):
                status_line = await reader.readline()
            assert int(status_line.split()[1]) == first_status, status_line
        finally:
            writer.close()
