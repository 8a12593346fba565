"""Snapshots: take, list, download (zip), load, start a session from one, delete; private."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import dill
import docker
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import user_headers
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


async def snapshot(
    client: TestClient[Any, Any], headers: dict[str, str], session_id: str, **body: Any
) -> str:
    resp = await client.post(f"/sessions/{session_id}/snapshot", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    snapshot_id: str = (await resp.json())["snapshotId"]
    return snapshot_id


async def test_take_list_download_and_delete(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Any
) -> None:
    session_id = await new_session(client, admin_headers)
    await execute(
        client,
        admin_headers,
        session_id,
        "import threading\nmodel = {'w': [1, 2]}\nlock = threading.Lock()\n"
        "gen = (i for i in range(3))\nopen('notes.txt', 'w').write('n')",
    )
    resp = await client.post(  # the SDK sends {"name": null}
        f"/sessions/{session_id}/snapshot", json={"name": None}, headers=admin_headers
    )
    assert resp.status == 201
    body = await resp.json()
    snapshot_id = body["snapshotId"]
    assert set(body["skipped"]) == {"gen"}  # a generator cannot be serialized: reported
    listed = await (await client.get("/snapshots", headers=admin_headers)).json()
    assert len(listed) == 1
    entry = listed[0]
    assert entry["id"] == snapshot_id and entry["owner"] == "admin" and entry["name"] is None
    assert entry["contentSize"] > 0 and entry["creationTime"].count(":") == 2

    resp = await client.get(f"/snapshots/{snapshot_id}", headers=admin_headers)
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    names = set(archive.namelist())
    assert "notes.txt" in names and ".o16n-workspace/model.dill" in names
    assert ".o16n-workspace/gen.dill" not in names  # a generator cannot be serialized: skipped
    assert dill.loads(archive.read(".o16n-workspace/model.dill")) == {"w": [1, 2]}

    labelled = {"label": [f"o16n.snapshot={snapshot_id}", f"o16n.instance={settings.instance}"]}
    assert docker.from_env().images.list(filters=labelled)
    resp = await client.delete(f"/snapshots/{snapshot_id}", headers=admin_headers)
    assert resp.status == 200
    assert (await client.get(f"/snapshots/{snapshot_id}", headers=admin_headers)).status == 404
    assert not docker.from_env().images.list(filters=labelled)
    assert await (await client.get("/snapshots", headers=admin_headers)).json() == []


async def test_load_into_a_session_and_start_a_session_from_one(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    source = await new_session(client, admin_headers)
    await execute(
        client, admin_headers, source, "x = 1\ny = 'from snapshot'\nopen('f.txt','w').write('snap')"
    )
    snapshot_id = await snapshot(client, admin_headers, source, name="s1")

    target = await new_session(client, admin_headers)
    await execute(
        client, admin_headers, target, "x = 99\nz = 'mine'\nopen('f.txt','w').write('mine')"
    )
    resp = await client.post(
        f"/sessions/{target}/loadsnapshot/{snapshot_id}", headers=admin_headers
    )
    assert resp.status == 200
    result = await execute(
        client,
        admin_headers,
        target,
        "content = open('f.txt').read()",
        outputParameters=["x", "y", "z", "content"],
    )
    values = {o["name"]: o["value"] for o in result["outputParameters"]}
    assert values == {"x": 1, "y": "from snapshot", "z": "mine", "content": "snap"}

    resp = await client.post("/sessions", json={"snapshotId": snapshot_id}, headers=admin_headers)
    assert resp.status == 201
    fresh = (await resp.json())["sessionId"]
    result = await execute(client, admin_headers, fresh, "y + ' ' + open('f.txt').read()")
    assert result["consoleOutput"] == "'from snapshot snap'\n"
    # deleting the snapshot while that session runs on its image keeps the image for it
    resp = await client.delete(f"/snapshots/{snapshot_id}", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert (await client.get(f"/snapshots/{snapshot_id}", headers=admin_headers)).status == 404
    result = await execute(client, admin_headers, fresh, "y")
    assert result["consoleOutput"] == "'from snapshot'\n"

    resp = await client.post("/sessions", json={"snapshotId": snapshot_id}, headers=admin_headers)
    assert resp.status == 404
    resp = await client.post("/sessions", json={"snapshotId": "nope"}, headers=admin_headers)
    assert resp.status == 404
    resp = await client.post(f"/sessions/{target}/loadsnapshot/nope", headers=admin_headers)
    assert resp.status == 404


async def test_snapshots_are_private(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    snapshot_id = await snapshot(client, admin_headers, session_id)
    other = await user_headers(client, "eve")
    theirs = await new_session(client, other)
    assert await (await client.get("/snapshots", headers=other)).json() == []
    for method, path in [
        ("GET", f"/snapshots/{snapshot_id}"),
        ("DELETE", f"/snapshots/{snapshot_id}"),
        ("POST", f"/sessions/{theirs}/loadsnapshot/{snapshot_id}"),
    ]:
        assert (await client.request(method, path, headers=other)).status == 404, path
    resp = await client.post("/sessions", json={"snapshotId": snapshot_id}, headers=other)
    assert resp.status == 404
    resp = await client.post(f"/sessions/{session_id}/snapshot", json={}, headers=other)
    assert resp.status == 404


async def test_a_snapshot_whose_content_is_missing_is_a_404(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Any
) -> None:
    session_id = await new_session(client, admin_headers)
    snapshot_id = await snapshot(client, admin_headers, session_id)
    (settings.shared_dir / "snapshots" / f"{snapshot_id}.tar.gz").unlink()
    resp = await client.get(f"/snapshots/{snapshot_id}", headers=admin_headers)
    assert resp.status == 404
    assert "is missing" in (await resp.json())["message"]
