"""Publish, get, list, patch and delete web services; the WebService JSON (API.md §5)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.settings import Settings
from tests.conftest import make_settings, user_headers
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session
from tests.snapshots.test_snapshots import snapshot

pytestmark = pytest.mark.docker

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Container counts here go by labels, and a container taken from the services' warm
    pool keeps its warm labels: keep that pool out of these tests (tests/clients and
    test_consume.py run with it)."""
    return make_settings(data_dir, service_warm_pool_size=0)


async def test_publish_get_list_and_the_web_service_json(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    body = await publish(
        client,
        admin_headers,
        "Adder",
        "1.0",
        code="total = a + b",
        inputParameterDefinitions=[
            {"name": "a", "type": "numeric"},
            {"name": "b", "type": "integer"},
        ],
        outputParameterDefinitions=[{"name": "total", "type": "numeric"}],
    )
    assert body == "/api/Adder/1.0"
    resp = await client.get("/services/Adder/1.0", headers=admin_headers)
    [service] = await resp.json()
    assert service == {
        "name": "Adder",
        "version": "1.0",
        "versionPublishedBy": "admin",
        "creationTime": service["creationTime"],
        "snapshotId": None,
        "runtimeType": "Python",
        "initCode": None,
        "code": "total = a + b",
        "description": None,
        "operationId": None,
        "inputParameterDefinitions": [
            {"name": "a", "type": "numeric"},
            {"name": "b", "type": "integer"},
        ],
        "outputParameterDefinitions": [{"name": "total", "type": "numeric"}],
        "outputFileNames": [],
        "myPermissionOnService": "read/write",
    }
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}$", service["creationTime"])
    await publish(client, admin_headers, "Adder", "1.0", code="x", expect=409)
    path = await publish(
        client,
        admin_headers,
        "Adder",
        code="total = a + b + 1",
        inputParameterDefinitions=[
            {"name": "a", "type": "numeric"},
            {"name": "b", "type": "numeric"},
        ],
        outputParameterDefinitions=[{"name": "total", "type": "numeric"}],
    )
    generated = path.rsplit("/", 1)[1]
    assert GUID.match(generated)
    versions = await (await client.get("/services/Adder", headers=admin_headers)).json()
    assert [v["version"] for v in versions] == ["1.0", generated]  # oldest first
    assert await (await client.get("/services/Nobody", headers=admin_headers)).json() == []
    assert (await client.get("/services/Adder/9.9", headers=admin_headers)).status == 404
    everything = await (await client.get("/services", headers=admin_headers)).json()
    assert {(s["name"], s["version"]) for s in everything} == {
        ("Adder", "1.0"),
        ("Adder", generated),
    }
    result = await consume(client, admin_headers, "Adder", "1.0", {"a": 1.5, "b": 2})
    assert result == {
        "success": True,
        "errorMessage": "",
        "consoleOutput": "",
        "changedFiles": [],
        "outputParameters": {"total": 3.5},
        "outputFiles": {},
    }


async def test_invalid_publish_requests_are_400s(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish(client, admin_headers, "bad name", "1", code="x", expect=400)
    await publish(client, admin_headers, "ok", "-1", code="x", expect=400)
    await publish(client, admin_headers, "ok", "1%2F2", code="x", expect=400)
    await publish(client, admin_headers, "ok", "1", expect=400)  # no code
    await publish(client, admin_headers, "ok", "1", code="x", runtimeType="R", expect=400)
    await publish(
        client,
        admin_headers,
        "ok",
        "1",
        code="x",
        inputParameterDefinitions=[{"name": "a", "type": "tensor"}],
        expect=400,
    )
    await publish(
        client,
        admin_headers,
        "ok",
        "1",
        code="x",
        inputParameterDefinitions=[
            {"name": "a", "type": "numeric"},
            {"name": "a", "type": "numeric"},
        ],
        expect=400,
    )
    await publish(client, admin_headers, "ok", "1", code="x", outputFileNames=["../x"], expect=400)
    await publish(client, admin_headers, "ok", "1", code="x", snapshotId="missing", expect=404)
    resp = await client.post("/realtime-services/rt/1", data=b"", headers=admin_headers)
    assert resp.status == 400 and "multipart/form-data" in (await resp.json())["message"]


async def test_the_service_keeps_its_environment_after_the_snapshot_is_deleted(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    await execute(
        client,
        admin_headers,
        session_id,
        "factor = 3\nopen('table.csv', 'w').write('k,v\\na,1\\n')",
    )
    snapshot_id = await snapshot(client, admin_headers, session_id)
    await publish(
        client,
        admin_headers,
        "Scaler",
        "v1",
        snapshotId=snapshot_id,
        code="import csv\nrows = list(csv.reader(open('table.csv')))\ny = x * factor + len(rows)",
        inputParameterDefinitions=[{"name": "x", "type": "numeric"}],
        outputParameterDefinitions=[{"name": "y", "type": "numeric"}],
    )
    resp = await client.delete(f"/snapshots/{snapshot_id}", headers=admin_headers)
    assert resp.status == 200
    result = await consume(client, admin_headers, "Scaler", "v1", {"x": 2})
    assert result["success"], result
    assert result["outputParameters"] == {"y": 8.0}
    [service] = await (await client.get("/services/Scaler/v1", headers=admin_headers)).json()
    assert service["snapshotId"] == snapshot_id


async def test_patch_changes_only_what_is_present(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish(
        client,
        admin_headers,
        "Doubler",
        "1",
        code="y = x * 2",
        operationId="double",
        inputParameterDefinitions=[{"name": "x", "type": "numeric"}],
        outputParameterDefinitions=[{"name": "y", "type": "numeric"}],
    )
    resp = await client.patch(
        "/services/Doubler/1",
        json={"description": "doubles", "runtimeType": "Python"},
        headers=admin_headers,
    )
    assert resp.status == 200 and await resp.json() == "/api/Doubler/1"
    [service] = await (await client.get("/services/Doubler/1", headers=admin_headers)).json()
    assert service["description"] == "doubles" and service["operationId"] == "double"
    assert service["inputParameterDefinitions"] == [{"name": "x", "type": "numeric"}]
    assert (await consume(client, admin_headers, "Doubler", "1", {"x": 4}))["outputParameters"] == {
        "y": 8.0
    }

    resp = await client.patch(
        "/services/Doubler/1", json={"operationId": "twice"}, headers=admin_headers
    )
    assert resp.status == 200
    document = await (await client.get("/api/Doubler/1/swagger.json", headers=admin_headers)).json()
    assert document["paths"]["/api/Doubler/1"]["post"]["operationId"] == "twice"

    resp = await client.patch(
        "/services/Doubler/1", json={"code": "y = x * 3"}, headers=admin_headers
    )
    assert resp.status == 200
    assert (await consume(client, admin_headers, "Doubler", "1", {"x": 4}))["outputParameters"] == {
        "y": 12.0
    }
    resp = await client.patch(
        "/services/Doubler/1", json={"outputParameterDefinitions": []}, headers=admin_headers
    )
    [service] = await (await client.get("/services/Doubler/1", headers=admin_headers)).json()
    assert service["outputParameterDefinitions"] == [] and service["description"] == "doubles"
    assert (await client.patch("/services/Doubler/2", json={}, headers=admin_headers)).status == 404


async def test_delete_removes_the_service_and_its_containers(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Any
) -> None:
    await publish(
        client,
        admin_headers,
        "Gone",
        "1",
        code="y = 1",
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    await consume(client, admin_headers, "Gone", "1", {})
    engine = docker.from_env()
    label = [f"o16n.instance={settings.instance}", "o16n.kind=service"]
    assert engine.containers.list(filters={"label": label})
    resp = await client.delete("/services/Gone/1", headers=admin_headers)
    assert resp.status == 200
    await consume(client, admin_headers, "Gone", "1", {}, expect=404)
    assert (await client.delete("/services/Gone/1", headers=admin_headers)).status == 404
    assert engine.containers.list(all=True, filters={"label": label}) == []


async def test_roles_and_ownership(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    alice = await user_headers(client, "alice", "Contributor")
    bob = await user_headers(client, "bob", "Contributor")
    reader = await user_headers(client, "rita", "Reader")
    await publish(
        client,
        alice,
        "Owned",
        "1",
        code="y = 1",
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    await publish(client, reader, "Mine", "1", code="y = 1", expect=403)
    await publish(client, bob, "Owned", "2", code="y = 2", expect=403)  # alice owns the name
    await publish(client, alice, "Owned", "2", code="y = 2")
    await publish(client, admin_headers, "Owned", "3", code="y = 3")  # an Owner may

    for who, permission, code in [
        (alice, "read/write", "y = 1"),
        (bob, "read only", None),
        (reader, "read only", None),
        (admin_headers, "read/write", "y = 1"),
    ]:
        [service] = await (await client.get("/services/Owned/1", headers=who)).json()
        assert service["myPermissionOnService"] == permission
        assert service["code"] == code

    assert (await consume(client, reader, "Owned", "1", {}))["outputParameters"] == {"y": 1}
    for who in (bob, reader):
        assert (
            await client.patch("/services/Owned/1", json={"description": "x"}, headers=who)
        ).status == 403
        assert (await client.delete("/services/Owned/1", headers=who)).status == 403
        resp = await client.post("/services/Owned/1/pool", json={"MaxPoolSize": 2}, headers=who)
        assert resp.status == 403
    assert (
        await client.patch("/services/Owned/1", json={"description": "x"}, headers=admin_headers)
    ).status == 200
    assert (await client.delete("/services/Owned/2", headers=alice)).status == 200
