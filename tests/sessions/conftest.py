from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

#: user code that prints, then runs for a minute: something to interrupt or close
BUSY = "import time\nprint('started', flush=True)\ntime.sleep(60)"
#: user code shares the agent's process: this makes its agent read interrupts and never
#: acknowledge them, so that the engine's SIGINT is the only way left
MUTE = (
    "from o16n_agent import protocol, redial\n"
    "def _answer(self, sock):\n"
    "    protocol.recv_message(sock, 4096, 0)\n"
    "    return True\n"
    "redial.Redialer._answer = _answer"
)


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
