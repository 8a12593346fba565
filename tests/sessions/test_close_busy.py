"""Closing a session while its code runs (API.md §8.1), and how an interrupt reaches the code.

``DELETE /sessions/{id}`` closes as ML Server's does, releasing what the session holds
without killing its interpreter: the running execution is interrupted (a
``KeyboardInterrupt``, the agent's own message) and answered with what it printed, then the
container goes. ``DELETE /sessions/{id}/force`` kills the interpreter: the container is
removed at once, and the running execution is answered with why, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import docker
import docker.errors
import pytest
from aiohttp.test_utils import TestClient

from controller.runtime.sandbox import FALLBACK_LOG
from tests.conftest import user_headers
from tests.sessions.conftest import BUSY, execute, new_session

pytestmark = pytest.mark.docker  # it checks the engine's containers itself


async def _start_busy(
    client: TestClient[Any, Any], headers: dict[str, str], session_id: str, admin: dict[str, str]
) -> tuple[asyncio.Task[dict[str, Any]], str]:
    """Run ``BUSY`` in the session; once it runs, the task and the session's container id."""
    running = asyncio.create_task(execute(client, headers, session_id, BUSY))
    for _ in range(100):
        resp = await client.get(f"/admin/sessions/{session_id}", headers=admin)
        body = await resp.json()
        if body["state"] == "busy":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # into time.sleep
    return running, body["containerId"]


async def _close_busy(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    session_id: str,
    admin: dict[str, str],
    suffix: str,
) -> tuple[str, Any, dict[str, Any], float]:
    """Start ``BUSY`` and close the session with ``DELETE /sessions/{id}{suffix}`` (a 200):
    the container id, the close's reply, the execution's result and the seconds from the
    close to that result. One piece, so both ways of closing are timed alike."""
    running, container = await _start_busy(client, headers, session_id, admin)
    started = time.monotonic()
    resp = await client.delete(f"/sessions/{session_id}{suffix}", headers=headers)
    assert resp.status == 200, await resp.text()
    reply = await resp.json()
    result = await asyncio.wait_for(running, 30)
    return container, reply, result, time.monotonic() - started


async def _container_gone(container_id: str) -> bool:
    """Whether the container goes (it does so after the close's answer), within 30 s."""
    for _ in range(300):
        try:
            docker.from_env().containers.get(container_id)
        except docker.errors.NotFound:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_force_ends_a_busy_session_at_once(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    headers = await user_headers(client, "fay")
    session_id = await new_session(client, headers)
    container, reply, result, took = await _close_busy(
        client, headers, session_id, admin_headers, "/force"
    )
    assert reply == f"Session '{session_id}' closed by force."
    assert took < 10  # not the minute the code wanted
    assert result["success"] is False
    assert "closed by force" in result["errorMessage"], result
    assert await _container_gone(container)

    resp = await client.post(f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers)
    assert resp.status == 404
    assert session_id not in [
        s["id"] for s in await (await client.get("/sessions", headers=headers)).json()
    ]


async def test_close_interrupts_a_busy_session_then_ends_it(
    client: TestClient[Any, Any], admin_headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    headers = await user_headers(client, "gil")
    session_id = await new_session(client, headers)
    container, reply, result, took = await _close_busy(
        client, headers, session_id, admin_headers, ""
    )
    assert reply == f"Session '{session_id}' closed."
    assert took < 10
    # the interpreter was interrupted, not killed: the execution's own answer, console and all
    assert result["success"] is False
    assert "interrupted" in result["errorMessage"] and "closed" in result["errorMessage"]
    assert result["consoleOutput"] == "started\n"
    assert await _container_gone(container)
    assert FALLBACK_LOG not in caplog.text  # the agent's message did it, not the engine's signal

    resp = await client.post(f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers)
    assert resp.status == 404


async def test_force_cuts_short_a_close_waiting_for_stubborn_code(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    headers = await user_headers(client, "ida")
    session_id = await new_session(client, headers)
    stubborn = (
        "import time\nprint('started', flush=True)\nwhile True:\n"
        "    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
    )
    running = asyncio.create_task(execute(client, headers, session_id, stubborn))
    await asyncio.sleep(1.5)
    resp = await client.delete(f"/sessions/{session_id}", headers=headers)
    assert resp.status == 200, await resp.text()  # at once: the close waits in the background
    await asyncio.sleep(1.0)
    assert not running.done()  # the plain close waits for the code to stop

    started = time.monotonic()
    resp = await client.delete(f"/sessions/{session_id}/force", headers=headers)
    assert resp.status == 200, await resp.text()
    result = await asyncio.wait_for(running, 30)
    assert "closed by force" in result["errorMessage"], result
    assert time.monotonic() - started < 5
