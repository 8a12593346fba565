"""Closing a busy session while the engine is away: the interrupt's fallback signal fails
(the agent does not acknowledge the message, and the engine cannot be reached), and the
close goes on all the same. It must not fail half-way, with the session forgotten and its
container left running, which no later close could reach."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import bearer, login
from tests.sessions.conftest import BUSY, MUTE, execute, new_session
from tests.sessions.engine_line import app_behind, engine_line
from tests.sessions.test_dead_containers import _containers, _until

pytestmark = pytest.mark.docker


async def test_a_close_goes_on_when_the_engines_sigint_fails(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine_line(data_dir) as line:
        settings, client = await app_behind(line, aiohttp_client, data_dir, monkeypatch)
        headers = bearer((await login(client))["access_token"])
        session_id = await new_session(client, headers)
        assert (await execute(client, headers, session_id, MUTE))["success"]
        running = asyncio.create_task(execute(client, headers, session_id, BUSY))
        await asyncio.sleep(1.5)

        await line.down()
        resp = await client.delete(f"/sessions/{session_id}", headers=headers)
        assert resp.status == 200, await resp.text()
        result = await asyncio.wait_for(running, 30)
        assert result["success"] is False and "closed" in result["errorMessage"], result
        resp = await client.delete(f"/sessions/{session_id}", headers=headers)
        assert resp.status == 404

        await line.up()  # its removal failed meanwhile: it is tried again, and done

        async def gone() -> bool:
            return not _containers(settings, f"o16n.id={session_id}")

        await _until(gone, timeout=60)
        await client.close()
