from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient


async def new_session(client: TestClient[Any, Any], headers: dict[str, str], **body: Any) -> str:
    resp = await client.post("/sessions", json={"runtimeType": "Python", **body}, headers=headers)
    assert resp.status == 201, await resp.text()
    session_id: str = (await resp.json())["sessionId"]
    return session_id


async def execute(
    client: TestClient[Any, Any], headers: dict[str, str], session_id: str, code: str, **extra: Any
) -> dict[str, Any]:
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": code, **extra}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result
