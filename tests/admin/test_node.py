"""``/admin/node``: the engine, this instance's containers and images, disk use; drain:
new sessions, publishes and batches get 503 with Retry-After, running work goes on, and
``/status`` warns."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.admin.conftest import audit_entries
from tests.conftest import user_headers
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


async def test_node_describes_engine_containers_and_disk(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await new_session(client, admin_headers)
    await publish(client, admin_headers, "Counted", "1", code="y = 1")
    resp = await client.get("/admin/node", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    node = await resp.json()
    engine = node["engine"]
    assert engine["version"] and engine["runc"] and engine["kernel"]
    assert engine["cgroupVersion"] in ("1", "2") and engine["cgroupDriver"]
    assert node["containers"]["session"]["running"] == 1
    assert node["images"]["runtime"]["present"] is True
    assert node["images"]["runtime"]["sizeBytes"] > 0
    assert node["images"]["services"] == 1 and node["images"]["snapshots"] == 0
    assert node["disk"]["dataDir"]["usedBytes"] > 0
    assert node["disk"]["dataDir"]["freeBytes"] > 0
    assert node["disk"]["engine"]["imagesBytes"] > 0 or "error" in node["disk"]["engine"]
    assert node["sessions"] == 1 and node["drain"]["draining"] is False
    resp = await client.get("/admin/node?engineDisk=false", headers=admin_headers)
    assert (await resp.json())["disk"]["engine"] == {"skipped": True}
    resp = await client.get("/admin/node?engineDisk=perhaps", headers=admin_headers)
    assert resp.status == 400 and "engineDisk" in (await resp.json())["message"]


async def test_drain_refuses_new_work_and_lets_running_work_finish(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    user = await user_headers(client, "ruth")
    session_id = await new_session(client, user)
    await publish(
        client,
        admin_headers,
        "Echo",
        "1",
        code="import time\ntime.sleep(0.2)\ny = x",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    resp = await client.post(
        "/api/Echo/1/batch?parallelCount=1", json=[{"x": i} for i in range(10)], headers=user
    )
    batch_id = (await resp.json())["batchExecutionId"]

    resp = await client.post("/admin/node/drain", json={"reason": "x"}, headers=user)
    assert resp.status == 403
    resp = await client.post(
        "/admin/node/drain",
        json={"reason": "kernel upgrade", "retryAfter": 120},
        headers=admin_headers,
    )
    assert resp.status == 200
    state = await resp.json()
    assert state["draining"] is True and state["by"] == "admin"

    refused = [
        ("/sessions", {"runtimeType": "Python"}),
        ("/services/Fresh", {"code": "x = 1", "runtimeType": "Python"}),
        ("/services/Fresh/1", {"code": "x = 1", "runtimeType": "Python"}),
        ("/api/Echo/1/batch", [{"x": 1}]),
    ]
    for path, body in refused:
        resp = await client.post(path, json=body, headers=user)
        assert resp.status == 503, path
        assert resp.headers["Retry-After"] == "120"
        error = await resp.json()
        assert "kernel upgrade" in error["message"] and error["exceptionType"]

    # what runs goes on: executions, consume, the batch started before
    assert (await execute(client, user, session_id, "print(5)"))["consoleOutput"] == "5\n"
    assert (await consume(client, user, "Echo", "1", {"x": 7}))["outputParameters"] == {"y": 7}
    for _ in range(300):
        status = await (await client.get(f"/api/Echo/1/batch/{batch_id}", headers=user)).json()
        if status["state"] == "Complete":
            break
        await asyncio.sleep(0.1)
    assert status["state"] == "Complete" and status["completedItemCount"] == 10

    status = await (await client.get("/status", headers=user)).json()
    assert status["statusCode"] == "warn"
    assert status["components"]["drain"]["statusCode"] == "warn"
    assert status["components"]["drain"]["details"]["reason"] == "kernel upgrade"

    resp = await client.post("/admin/node/undrain", headers=admin_headers)
    assert (await resp.json())["draining"] is False
    await new_session(client, user)
    status = await (await client.get("/status", headers=user)).json()
    assert "drain" not in status["components"]

    actions = [(e.action, e.actor, e.outcome) for e in await audit_entries(client, action="node.*")]
    assert actions == [
        ("node.undrain", "admin", "ok"),
        ("node.drain", "admin", "ok"),
        ("node.drain", "ruth", "denied"),
    ]


async def test_drain_input_is_checked(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    for body, field in (({"retryAfter": 0}, "retryAfter"), ({"reason": ""}, "reason")):
        resp = await client.post("/admin/node/drain", json=body, headers=admin_headers)
        assert resp.status == 400 and field in (await resp.json())["message"]
    resp = await client.post("/admin/node/drain", headers=admin_headers)  # no body: defaults
    assert (await resp.json())["retryAfter"] == 300
