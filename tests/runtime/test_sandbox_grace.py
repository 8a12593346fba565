"""Code that outlives its time limit *and* the grace after the interrupt (``Sandbox.run``'s
``stuck`` outcome): the session is closed with why, the service's container replaced; the
caller gets ``success: false``, never a 500. Runs on the engine of the run (no Docker
needed)."""

from __future__ import annotations

from typing import Any

from controller.app import create_app
from tests.conftest import bearer, login, make_settings, user_headers
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

#: Swallows every interrupt: only removing its container ends it.
STUBBORN = (
    "import time\n"
    "while go:\n"
    "    try:\n"
    "        time.sleep(60)\n"
    "    except KeyboardInterrupt:\n"
    "        pass\n"
)


async def test_a_session_whose_code_ignores_the_interrupt_is_closed(
    aiohttp_client: Any, data_dir: Any
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, execute_timeout=1)))
    headers = await user_headers(client, "sam")
    session_id = await new_session(client, headers)
    result = await execute(client, headers, session_id, "go = True\n" + STUBBORN)
    assert result["success"] is False
    assert "did not stop when interrupted; the session was closed" in result["errorMessage"]
    resp = await client.post(f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers)
    assert resp.status == 410, await resp.text()


async def test_a_service_container_whose_code_ignores_the_interrupt_is_replaced(
    aiohttp_client: Any, data_dir: Any
) -> None:
    settings = make_settings(data_dir, consume_timeout=1, service_pool_max=1)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    await publish(
        client,
        headers,
        "Stubborn",
        "1",
        code=STUBBORN,
        inputParameterDefinitions=[{"name": "go", "type": "logical"}],
    )
    result = await consume(client, headers, "Stubborn", "1", {"go": True})
    assert result["success"] is False
    assert "time limit of 1 s" in result["errorMessage"]
    assert (await consume(client, headers, "Stubborn", "1", {"go": False}))["success"]
