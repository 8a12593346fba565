"""HTTP hardening: security headers, connection timeouts, the open-file limit, names."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

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
