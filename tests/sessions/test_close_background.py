"""``DELETE /sessions/{id}`` answers before the container is gone (issue 14).

The session is gone at the answer: every later call is 404 and the owner's quota no longer
counts it; its container goes in the background, and a controller killed before it is gone
removes it at its next start. The container is kept observably alive by code that ignores
its interrupt, so that a plain close has to wait for it (``CLOSE_GRACE``): no timing.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from controller.app import create_app
from controller.sessions import manager
from tests.conftest import INSTANCE_PREFIX, RUN_ID, bearer, login, make_settings
from tests.live_server import run_server
from tests.sessions.conftest import execute, new_session
from tests.sessions.test_dead_containers import _until

pytestmark = pytest.mark.docker

#: code that prints, then ignores every interrupt: a plain close waits for it to stop
STUBBORN = (
    "import time\nprint('started', flush=True)\nwhile True:\n"
    "    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
)


def _session_containers(instance: str, session_id: str) -> list[Any]:
    engine = docker.from_env()
    labels = [f"o16n.instance={instance}", f"o16n.id={session_id}"]
    # sparse: no inspect of each container, which fails for one removed meanwhile
    return list(engine.containers.list(all=True, sparse=True, filters={"label": labels}))


async def test_delete_answers_while_the_container_still_runs(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "CLOSE_GRACE", 300.0)  # only the force below ends the code
    settings = make_settings(data_dir, warm_pool_size=0, sessions_per_user=1)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    running = asyncio.create_task(execute(client, headers, session_id, STUBBORN))
    await asyncio.sleep(1.5)  # into the loop

    resp = await asyncio.wait_for(client.delete(f"/sessions/{session_id}", headers=headers), 30)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == f"Session '{session_id}' closed."
    [container] = _session_containers(settings.instance, session_id)
    assert container.status == "running"  # it goes in the background
    assert not running.done()

    # the session is gone at once: every call 404, not listed, not counted in the quota
    for method, path in [
        ("POST", f"/sessions/{session_id}/execute"),
        ("GET", f"/sessions/{session_id}/history"),
        ("GET", f"/sessions/{session_id}/files"),
        ("POST", f"/sessions/{session_id}/cancel"),
        ("DELETE", f"/sessions/{session_id}"),
    ]:
        resp = await client.request(method, path, json={"code": "1"}, headers=headers)
        assert resp.status == 404, (method, path, await resp.text())
    assert await (await client.get("/sessions", headers=headers)).json() == []
    # ...but while its code runs on, its container counts against the limit (1)
    resp = await client.post("/sessions", json={"runtimeType": "Python"}, headers=headers)
    assert resp.status == 429, await resp.text()
    assert "closed ones whose code has not stopped yet" in (await resp.json())["message"]
    assert _session_containers(settings.instance, session_id)

    # a force still cuts the close short: the execution in flight answers, and it goes
    resp = await client.delete(f"/sessions/{session_id}/force", headers=headers)
    assert resp.status == 200, await resp.text()
    result = await asyncio.wait_for(running, 30)
    assert result["success"] is False and "closed by force" in result["errorMessage"], result

    async def gone() -> bool:
        return not _session_containers(settings.instance, session_id)

    await _until(gone, timeout=30)
    other = await new_session(client, headers)  # its code stopped: the limit has room
    assert (await execute(client, headers, other, "1"))["success"]


async def test_a_controller_killed_after_delete_removes_the_container_at_its_next_start(
    data_dir: Path,
) -> None:
    options = {"warm_pool_size": "0", "service_warm_pool_size": "0"}
    servers = run_server(data_dir=data_dir, **options)
    server = next(servers)
    instance = f"{INSTANCE_PREFIX}{RUN_ID}-live"  # run_server's
    try:
        async with aiohttp.ClientSession(headers=server.headers) as http:
            url = server.url
            async with http.post(f"{url}/sessions", json={}) as resp:
                assert resp.status == 201, await resp.text()
                session_id = (await resp.json())["sessionId"]
            running = asyncio.create_task(
                http.post(f"{url}/sessions/{session_id}/execute", json={"code": STUBBORN})
            )
            await asyncio.sleep(1.5)  # into the loop, which ignores the close's interrupt
            async with http.delete(f"{url}/sessions/{session_id}") as resp:
                assert resp.status == 200, await resp.text()
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
            with pytest.raises(aiohttp.ClientError):
                await running
    finally:
        servers.close()
    assert _session_containers(instance, session_id), "killed before removal"

    again = run_server(data_dir=data_dir, **options)
    try:
        next(again)  # up: its start reaped what no session record names
        assert _session_containers(instance, session_id) == []
    finally:
        again.close()
