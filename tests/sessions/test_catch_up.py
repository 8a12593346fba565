"""An ``execute`` that first waits for the history to be written (``WRITE_BEHIND_MAX``
results unwritten) leaves the session as it found it when that wait fails, and runs
nothing when the session was closed during it. On the fake engine: no Docker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.app import create_app
from controller.sessions import manager
from controller.sessions.manager import SESSIONS
from tests.conftest import bearer, login, make_settings
from tests.sessions.conftest import new_session


@pytest.fixture(autouse=True)
def _always_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "WRITE_BEHIND_MAX", 0)


async def test_a_catch_up_that_fails_leaves_the_session_idle(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)

    async def broken() -> None:  # the database gone bad: not "full" nor "locked"
        raise RuntimeError("disk I/O error")

    with monkeypatch.context() as patch:  # undone before the app's shutdown flushes
        patch.setattr(client.app[SESSIONS].log, "flush", broken)
        resp = await client.post(
            f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers
        )
    assert resp.status == 500, await resp.text()

    resp = await client.get("/admin/sessions", headers=headers)
    assert resp.status == 200, await resp.text()
    [listed] = [s for s in await resp.json() if s["id"] == session_id]
    assert listed["state"] == "idle"  # not "busy" for good: the idle reaper would skip it


async def test_a_session_closed_during_the_catch_up_runs_nothing(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir)))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow() -> None:  # a write that waits for the database's lock
        entered.set()
        await release.wait()

    with monkeypatch.context() as patch:
        patch.setattr(client.app[SESSIONS].log, "flush", slow)
        running = asyncio.create_task(
            client.post(
                f"/sessions/{session_id}/execute", json={"code": "print('ran')"}, headers=headers
            )
        )
        await asyncio.wait_for(entered.wait(), 30)
        resp = await client.delete(f"/sessions/{session_id}", headers=headers)
        assert resp.status == 200, await resp.text()
        release.set()
        resp = await asyncio.wait_for(running, 30)
    assert resp.status == 404, await resp.text()  # as for a call that came after the close
