"""A controller restart: running sessions are adopted (their agents dial in again); sessions
whose container vanished are reported gone; nothing is left orphaned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from controller.app import create_app
from controller.sessions.history import ExecutionLog
from tests.conftest import bearer, login, make_settings
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


async def test_sessions_survive_a_controller_restart(aiohttp_client: Any, data_dir: Path) -> None:
    settings = make_settings(data_dir, warm_pool_size=1)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    kept = await new_session(first, headers)
    await execute(first, headers, kept, "state = {'n': 41}\nopen('f.txt', 'w').write('x')")
    await first.close()

    engine = docker.from_env()
    label = f"o16n.instance={settings.instance}"
    assert len(engine.containers.list(filters={"label": label})) == 1, "the session outlives us"

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    result = await execute(second, headers, kept, "state['n'] += 1", outputParameters=["state"])
    assert result["success"] and result["outputParameters"] == [
        {"name": "state", "value": {"n": 42}}
    ]
    history = await (await second.get(f"/sessions/{kept}/history", headers=headers)).json()
    assert len(history) == 2
    assert await (await second.get(f"/sessions/{kept}/files", headers=headers)).json() == ["f.txt"]
    listed = {s["id"] for s in await (await second.get("/sessions", headers=headers)).json()}
    assert kept in listed
    await second.close()


async def test_a_session_whose_container_vanished_is_reported_gone(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, warm_pool_size=1)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    session_id = await new_session(first, headers)
    await first.close()

    engine = docker.from_env()
    label = f"o16n.instance={settings.instance}"
    containers = engine.containers.list(all=True, filters={"label": label})
    # the warm pool's container was removed at shutdown; only the session's remains
    assert len(containers) == 1
    containers[0].remove(force=True)

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    resp = await second.post(f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers)
    assert resp.status == 410
    assert "controller restart" in (await resp.json())["message"]
    assert session_id not in {
        s["id"] for s in await (await second.get("/sessions", headers=headers)).json()
    }
    await second.close()
    # after the second shutdown only adopted sessions' containers remain: none here
    assert engine.containers.list(all=True, filters={"label": label}) == []


async def test_warm_containers_serve_one_session_each(aiohttp_client: Any, data_dir: Path) -> None:
    import asyncio

    settings = make_settings(data_dir, warm_pool_size=2)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    engine = docker.from_env()
    label = f"o16n.instance={settings.instance}"
    for _ in range(100):
        warm = engine.containers.list(
            filters={"label": [label, "o16n.kind=warm", "o16n.id=sessions"]}
        )
        if len(warm) == 2:
            break
        await asyncio.sleep(0.2)
    assert len(warm) == 2
    session_id = await new_session(client, headers)
    result = await execute(
        client,
        headers,
        session_id,
        "import os\nkey = os.environ['O16N_CONTAINER_KEY']",
        outputParameters=["key"],
    )
    key = result["outputParameters"][0]["value"]
    assert key in {c.labels["o16n.key"] for c in warm}
    await client.delete(f"/sessions/{session_id}", headers=headers)
    for _ in range(300):  # it goes after the answer
        # sparse: no inspect of each container, which fails for one removed meanwhile
        listed = engine.containers.list(all=True, sparse=True, filters={"label": label})
        remaining = {c.attrs["Labels"].get("o16n.key") for c in listed}
        if key not in remaining:
            break
        await asyncio.sleep(0.1)
    assert key not in remaining  # removed with its session, never reused


async def test_executions_not_yet_written_are_collected_after_a_crash(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is written behind the answers, a batch at a time. A controller that
    dies before writing (here its writes never happen, as after a SIGKILL) loses none of
    it: the session's agent keeps the results not written, and the next one collects them."""
    settings = make_settings(data_dir, warm_pool_size=0)

    async def never(self: ExecutionLog) -> None:
        return None

    monkeypatch.setattr(ExecutionLog, "flush", never)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    session_id = await new_session(first, headers)
    codes = [f"x{n} = {n}\nprint({n})" for n in range(1, 4)]
    for code in codes:
        assert (await execute(first, headers, session_id, code))["success"]
    await first.close()
    monkeypatch.undo()

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    # waits for the session, busy collecting meanwhile
    assert (await execute(second, headers, session_id, "x1 + x2 + x3"))["consoleOutput"] == "6\n"
    history = await (await second.get(f"/sessions/{session_id}/history", headers=headers)).json()
    assert history == [*codes, "x1 + x2 + x3"]
    await second.close()
