"""Cancel reaches running code as a message to the agent; the engine's SIGINT is only the
fallback for an agent that does not acknowledge it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.runtime.sandbox import FALLBACK_LOG
from tests.conftest import user_headers
from tests.sessions.conftest import BUSY, MUTE, execute, new_session


async def test_cancel_is_a_message_and_a_silent_agent_gets_the_signal(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    headers = await user_headers(client, "hal")
    session_id = await new_session(client, headers)

    async def cancel_busy() -> dict[str, Any]:
        running = asyncio.create_task(execute(client, headers, session_id, BUSY))
        await asyncio.sleep(1.5)
        resp = await client.post(f"/sessions/{session_id}/cancel", headers=headers)
        assert await resp.json() == "Execution interrupted."
        return await asyncio.wait_for(running, 30)

    result = await cancel_busy()
    assert "cancelled" in result["errorMessage"] and result["consoleOutput"] == "started\n"
    assert FALLBACK_LOG not in caplog.text

    # User code shares the agent's process: here it makes the agent read interrupts and
    # never acknowledge them. The engine's SIGINT still reaches the code.
    assert (await execute(client, headers, session_id, MUTE))["success"]
    result = await cancel_busy()
    assert "cancelled" in result["errorMessage"] and result["consoleOutput"] == "started\n"
    assert caplog.text.count(FALLBACK_LOG) == 1
    assert (await execute(client, headers, session_id, "'alive'"))["consoleOutput"] == "'alive'\n"


async def test_interrupts_at_once_send_one_fallback_signal(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Two interrupts at once (a cancel clicked twice; a cancel and the time limit) are one
    message to the agent, and so one ``KeyboardInterrupt``; when the agent is silent they
    must be one engine SIGINT too, not a second one that interrupts the code's own
    clean-up after the first."""
    caplog.set_level(logging.WARNING)
    headers = await user_headers(client, "ivy")
    session_id = await new_session(client, headers)
    assert (await execute(client, headers, session_id, MUTE))["success"]
    careful = (
        "import time\nprint('started', flush=True)\ntry:\n    time.sleep(60)\n"
        "except KeyboardInterrupt:\n    time.sleep(1)\n    print('cleaned up')\n"
    )
    running = asyncio.create_task(execute(client, headers, session_id, careful))
    await asyncio.sleep(1.5)
    cancels = [client.post(f"/sessions/{session_id}/cancel", headers=headers) for _ in range(2)]
    for resp in await asyncio.gather(*cancels):
        assert await resp.json() == "Execution interrupted."
    result = await asyncio.wait_for(running, 30)
    assert result["consoleOutput"] == "started\ncleaned up\n", result
    assert caplog.text.count(FALLBACK_LOG) == 1
