from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


async def publish(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    name: str,
    version: str | None = None,
    *,
    expect: int = 201,
    **body: Any,
) -> Any:
    body.setdefault("runtimeType", "Python")
    path = f"/services/{name}" + (f"/{version}" if version else "")
    resp = await client.post(path, json=body, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def consume(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    name: str,
    version: str,
    body: Any,
    *,
    expect: int = 200,
) -> Any:
    resp = await client.post(f"/api/{name}/{version}", json=body, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()
