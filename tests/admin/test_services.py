"""``/admin/services``, ``/admin/snapshots``, ``/admin/batches``: every version's pool and
its counters, recycling a pool, snapshot sizes, everyone's batches and cancelling them; and
that the consume path writes no audit row."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.audit.log import AUDIT
from controller.settings import Settings
from controller.store.db import DB
from tests.admin.conftest import audit_entries
from tests.conftest import bearer, login, make_settings, user_headers
from tests.services.conftest import consume, publish
from tests.sessions.conftest import new_session

pytestmark = pytest.mark.docker


def _service_containers(settings: Settings) -> set[str]:
    client = docker.from_env()
    try:
        found = client.containers.list(
            sparse=True,
            filters={"label": [f"o16n.instance={settings.instance}", "o16n.kind=service"]},
        )
        return {c.id for c in found}
    finally:
        client.close()


async def _admin_service(
    client: TestClient[Any, Any], headers: dict[str, str], name: str
) -> dict[str, Any]:
    services = await (await client.get("/admin/services", headers=headers)).json()
    return next(s for s in services if s["name"] == name)


async def _audit_rows(client: TestClient[Any, Any]) -> int:
    await client.app[AUDIT].flush()
    row = await client.app[DB].fetchone("SELECT COUNT(*) FROM audit")
    assert row is not None
    return int(row[0])


async def test_pools_counters_and_recycle(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    await publish(
        client,
        admin_headers,
        "Adder",
        "1",
        code="y = x + 1",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    reader = await user_headers(client, "pat", "Reader")
    for i in range(3):
        assert (await consume(client, reader, "Adder", "1", {"x": i}))["outputParameters"] == {
            "y": i + 1
        }
    item = await _admin_service(client, admin_headers, "Adder")
    assert item["publisher"] == "admin" and item["requestsServed"] == 3
    pool = item["pool"]
    assert (pool["idle"], pool["busy"], pool["queued"], pool["rejected"]) == (1, 0, 0, 0)
    assert pool["lastError"] is None and pool["initial"] == 1

    # consuming writes no audit row (the measure of issue 11): many requests, same count
    before = await _audit_rows(client)
    started = time.perf_counter()
    for i in range(40):
        await consume(client, reader, "Adder", "1", {"x": i})
    rate = 40 / (time.perf_counter() - started)
    assert await _audit_rows(client) == before
    print(f"consume: {rate:.0f} requests/s sequential, no audit row written")

    old = _service_containers(settings)
    assert len(old) == 1
    resp = await client.post("/admin/services/Adder/1/recycle", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["requestsServed"] == 43
    for _ in range(300):
        now = _service_containers(settings)
        if (
            now
            and not now & old
            and (await _admin_service(client, admin_headers, "Adder"))["pool"]["idle"] == 1
        ):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the pool was not recycled: {old} → {now}")
    assert (await consume(client, reader, "Adder", "1", {"x": 1}))["outputParameters"] == {"y": 2}
    resp = await client.post("/admin/services/Nope/1/recycle", headers=admin_headers)
    assert resp.status == 404
    entries = await audit_entries(client, action="service.pool.recycle")
    assert [(e.target, e.outcome) for e in entries] == [("Nope/1", "failed"), ("Adder/1", "ok")]


async def test_rejected_requests_are_counted(aiohttp_client: Any, data_dir: Any) -> None:
    settings = make_settings(data_dir, service_queue_max=0, service_pool_initial=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    await publish(client, headers, "Busy", "1", code="x = 1")
    await consume(client, headers, "Busy", "1", {}, expect=503)
    item = await _admin_service(client, headers, "Busy")
    assert item["pool"]["rejected"] == 1 and item["requestsServed"] == 0


async def test_snapshots_and_batches_of_everyone(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    owner = await user_headers(client, "quin")
    session_id = await new_session(client, owner)
    await client.post(
        f"/sessions/{session_id}/execute", json={"code": "data = list(range(1000))"}, headers=owner
    )
    resp = await client.post(f"/sessions/{session_id}/snapshot", json={}, headers=owner)
    snapshot_id = (await resp.json())["snapshotId"]
    snapshots = await (await client.get("/admin/snapshots", headers=admin_headers)).json()
    assert [(s["id"], s["owner"]) for s in snapshots] == [(snapshot_id, "quin")]
    assert snapshots[0]["sizeBytes"] > 100 and len(snapshots[0]["sha256"]) == 64

    await publish(
        client,
        owner,
        "Slow",
        "1",
        code="import time\ntime.sleep(0.5)\ny = x",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
    )
    resp = await client.post(
        "/api/Slow/1/batch?parallelCount=1", json=[{"x": i} for i in range(100)], headers=owner
    )
    assert resp.status == 202
    batch_id = (await resp.json())["batchExecutionId"]
    batches = await (await client.get("/admin/batches", headers=admin_headers)).json()
    assert [(b["id"], b["owner"], b["service"], b["total"]) for b in batches] == [
        (batch_id, "quin", "Slow", 100)
    ]
    assert batches[0]["state"] in ("Pending", "InProgress")

    resp = await client.delete(f"/admin/batches/{batch_id}", headers=admin_headers)
    assert resp.status == 200
    assert await (await client.get("/admin/batches", headers=admin_headers)).json() == []
    resp = await client.get(f"/api/Slow/1/batch/{batch_id}", headers=owner)
    assert resp.status == 404
    resp = await client.delete(f"/admin/batches/{batch_id}", headers=admin_headers)
    assert resp.status == 404
    resp = await client.get("/admin/batches?limit=0", headers=admin_headers)
    assert resp.status == 400 and "limit" in (await resp.json())["message"]
    entries = await audit_entries(client, action="batch.cancel.admin")
    assert [e.outcome for e in entries] == ["failed", "ok"]
    actions = {e.action for e in await audit_entries(client, actor="quin")}
    assert {"snapshot.create", "service.publish", "session.create"} <= actions
