"""The whole application on the fake engine (``O16N_ENGINE=fake``), no Docker anywhere:
sessions, snapshots, services, batch, the admin endpoints, and a restart that adopts a
session whose agent kept running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.app import create_app
from controller.errors import RuntimeFailure
from controller.runtime import fake
from controller.runtime.engines import ENGINE
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session


async def test_sessions_snapshots_services_and_batch_run_on_the_fake_engine(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, engine="fake", warm_pool_size=0, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    assert client.app[ENGINE].name == "fake"
    headers = bearer((await login(client))["access_token"])

    session = await new_session(client, headers)
    result = await execute(client, headers, session, "x = 20\nopen('f.txt', 'w').write('kept')")
    assert result["success"], result
    resp = await client.post(f"/sessions/{session}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    snapshot_id = (await resp.json())["snapshotId"]

    resp = await client.post("/sessions", json={"snapshotId": snapshot_id}, headers=headers)
    assert resp.status == 201, await resp.text()
    restored = (await resp.json())["sessionId"]
    result = await execute(client, headers, restored, "print(x + 1, open('f.txt').read())")
    assert result["consoleOutput"] == "21 kept\n"

    await publish(
        client,
        headers,
        "Adder",
        "1",
        snapshotId=snapshot_id,
        code="y = x + a",
        inputParameterDefinitions=[{"name": "a", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    answer = await consume(client, headers, "Adder", "1", {"a": 2})
    assert answer["outputParameters"] == {"y": 22}

    resp = await client.post("/api/Adder/1/batch", json=[{"a": 1}, {"a": 3}], headers=headers)
    assert resp.status == 202, await resp.text()
    batch = (await resp.json())["batchExecutionId"]
    for _ in range(300):
        body = await (await client.get(f"/api/Adder/1/batch/{batch}", headers=headers)).json()
        if body["state"] in ("Complete", "Failed"):
            break
        await asyncio.sleep(0.1)
    outputs = [r["outputParameters"]["y"] for r in body["batchExecutionResults"]]
    assert outputs == [21, 23]

    resp = await client.get("/admin/sessions?stats=true", headers=headers)
    listed = {s["id"]: s for s in await resp.json()}
    assert listed[session]["stats"]["memoryBytes"] > 1_000_000
    resp = await client.get("/status", headers=headers)
    assert resp.status == 200  # no engine facts or image to report: no components for them
    assert "dockerEngine" not in (await resp.json())["components"]
    resp = await client.get("/admin/node", headers=headers)
    assert resp.status == 200, await resp.text()
    await client.close()

    # a restart: the session's agent kept running and the new controller adopts it
    again = await aiohttp_client(create_app(settings))
    headers = bearer((await login(again))["access_token"])
    result = await execute(again, headers, session, "print(x)")
    assert result["consoleOutput"] == "20\n"
    answer = await consume(again, headers, "Adder", "1", {"a": 5})
    assert answer["outputParameters"] == {"y": 25}


def test_the_fake_engine_will_not_serve_beyond_loopback(data_dir: Path) -> None:
    settings = make_settings(data_dir, engine="fake", host="0.0.0.0")

    async def start() -> None:
        async with fake.open_engine(settings):
            pytest.fail("the fake engine started on 0.0.0.0")

    with pytest.raises(RuntimeFailure, match="loopback"):
        asyncio.run(start())
