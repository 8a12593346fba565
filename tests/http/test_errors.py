"""Every error is JSON ``{"message", "exceptionType"}``; no client input stops the controller."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import login, make_settings


async def test_unknown_route_is_a_json_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    body = await resp.json()
    assert body["exceptionType"] == "NotFoundError"
    assert "/no/such/route" in body["message"]


async def test_wrong_method_is_a_json_405(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/login")
    assert resp.status == 405
    body = await resp.json()
    assert "POST" in body["message"] and "POST" in resp.headers["Allow"]


async def test_oversized_body_is_a_json_413(aiohttp_client: Any, data_dir: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, max_body_bytes=1024)))
    resp = await client.post(
        "/login", data=b"{" + b" " * 4096 + b"}", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 413
    body = await resp.json()
    assert body["exceptionType"] == "PayloadTooLargeError" and "1024" in body["message"]
    # and the controller still answers
    await login(client)


async def test_hostile_bodies_never_crash_the_controller(client: TestClient[Any, Any]) -> None:
    bodies: list[bytes] = [
        b"\xff\xfe\x00garbage",
        b"null",
        b"[]",
        b'"str"',
        b"1e999999",
        b'{"username": 1, "password": []}',
        b'{"username": "' + b"a" * 5000 + b'", "password": "x"}',
        b"{" * 10000,
    ]
    for body in bodies:
        resp = await client.post("/login", data=body, headers={"Content-Type": "application/json"})
        assert resp.status in (400, 401, 413), body[:20]
        assert "message" in await resp.json()
    await login(client)


async def test_json_content_type_on_bodyless_requests_is_ignored(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    # Microsoft's SDK sends Content-Type and Accept: application/json on every request.
    headers = {**admin_headers, "Content-Type": "application/json", "Accept": "application/json"}
    resp = await client.get("/status", headers=headers)
    assert resp.status == 200
