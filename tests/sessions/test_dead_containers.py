"""Containers that die while idle are noticed at once, from the engine's events: a dead
session is no longer listed and answers 410 with the reason; a dead pool container is
replaced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.settings import Settings
from controller.store.db import BUSY_TIMEOUT
from tests.conftest import bearer, login, make_settings, write_lock_held
from tests.services.conftest import consume, publish
from tests.sessions.conftest import new_session
from tests.sessions.engine_line import EngineLine, app_behind, engine_line

pytestmark = pytest.mark.docker


def _containers(settings: Settings, *labels: str) -> list[Any]:
    engine = docker.from_env()
    return list(
        engine.containers.list(filters={"label": [f"o16n.instance={settings.instance}", *labels]})
    )


async def _until(condition: Callable[[], Any], timeout: float) -> float:
    """Seconds until ``condition()`` holds (fails after ``timeout``)."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, "not within the time allowed"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_killed_idle_session_is_ended_at_once_with_the_reason(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    session_id = await new_session(client, admin_headers)
    [container] = _containers(settings, f"o16n.id={session_id}")
    container.kill()

    async def unlisted() -> bool:
        listed = await (await client.get("/sessions", headers=admin_headers)).json()
        return session_id not in {s["id"] for s in listed}

    await _until(unlisted, timeout=3.0)
    resp = await client.get(f"/sessions/{session_id}/console-output", headers=admin_headers)
    assert resp.status == 410
    assert "killed by signal 9" in (await resp.json())["message"]
    await _until(lambda: _gone(container), timeout=5.0)  # and its container was removed


async def test_a_session_killed_while_the_database_is_locked_loses_its_container(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    """The database cannot record the death (another connection holds it locked): the
    session still ends and its container is still removed, not left running unowned."""
    session_id = await new_session(client, admin_headers)
    [container] = _containers(settings, f"o16n.id={session_id}")
    with write_lock_held(settings, 30):
        container.kill()
        await _until(lambda: _gone(container), timeout=BUSY_TIMEOUT + 10)
    listed = await (await client.get("/sessions", headers=admin_headers)).json()
    assert session_id not in {s["id"] for s in listed}


async def _gone(container: Any) -> bool:
    try:
        await asyncio.to_thread(container.reload)
    except docker.errors.NotFound:
        return True
    return False


async def test_dead_pool_containers_are_replaced(aiohttp_client: Any, data_dir: Any) -> None:
    settings = make_settings(data_dir, warm_pool_size=1, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    await publish(
        client,
        headers,
        "Twice",
        "1",
        code="y = x * 2",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    assert (await consume(client, headers, "Twice", "1", {"x": 2}))["outputParameters"] == {"y": 4}

    for labels in (["o16n.kind=warm", "o16n.id=sessions"], ["o16n.kind=service"]):

        async def one(labels: list[str] = labels) -> bool:
            return len(await asyncio.to_thread(_containers, settings, *labels)) == 1

        await _until(one, timeout=30.0)
        [dead] = _containers(settings, *labels)
        dead.kill()

        async def replaced(labels: list[str] = labels, dead: Any = dead) -> bool:
            now = await asyncio.to_thread(_containers, settings, *labels)
            return len(now) == 1 and now[0].id != dead.id

        await _until(replaced, timeout=30.0)
    assert (await consume(client, headers, "Twice", "1", {"x": 21}))["outputParameters"] == {
        "y": 42
    }


async def test_a_session_that_died_while_the_engine_was_away_is_ended_when_it_is_back(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine_line(data_dir) as line:
        await _engine_away(aiohttp_client, data_dir, monkeypatch, line)


async def _engine_away(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch, line: EngineLine
) -> None:
    settings, client = await app_behind(line, aiohttp_client, data_dir, monkeypatch)
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    [container] = _containers(settings, f"o16n.id={session_id}")

    await line.down()  # no events reach the controller now
    await asyncio.to_thread(container.kill)
    await asyncio.sleep(1.0)
    await line.up()

    async def ended() -> bool:
        resp = await client.get(f"/sessions/{session_id}/console-output", headers=headers)
        return resp.status == 410

    await _until(ended, timeout=10.0)
    resp = await client.get(f"/sessions/{session_id}/console-output", headers=headers)
    message = (await resp.json())["message"]
    assert "killed by signal 9" in message and "after an outage or a restart" in message
    await client.close()
