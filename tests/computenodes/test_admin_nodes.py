"""``/admin/nodes``: the engine's description of each compute node and the controller's
SSH public key; draining and undraining a node by name (404 for an unknown one); Owner
only; the drains audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.runtime.nodes import parse_node
from controller.settings import Settings
from tests.admin.conftest import audit_entries
from tests.computenodes.conftest import RecordingNodes, node_settings
from tests.conftest import bearer, login, user_headers

A = "ssh://o16n@node-a"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ5Jb1x1u0yK5+example o16n@controller"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    key = data_dir / "keys" / "id_ed25519"
    key.parent.mkdir()
    key.with_suffix(".pub").write_text(KEY + "\n")
    return node_settings(data_dir, ssh_key=key)


async def test_nodes_are_described_with_the_public_key(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    await client.post("/computenodes", json={"entries": [A]}, headers=admin_headers)
    resp = await client.get("/admin/nodes", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["sshPublicKey"] == KEY
    assert [(n["name"], n["entry"], n["state"]) for n in body["nodes"]] == [
        ("local", "unix:///var/run/docker.sock", "up"),
        (parse_node(A).name, A, "up"),
    ]


async def test_drain_and_undrain(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    await client.post("/computenodes", json={"entries": [A]}, headers=admin_headers)
    name = parse_node(A).name
    resp = await client.post(f"/admin/nodes/{name}/drain", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    drained = await resp.json()
    assert (drained["state"], drained["draining"]) == ("up", True) and recorder.draining == {name}
    resp = await client.delete(f"/admin/nodes/{name}/drain", headers=admin_headers)
    assert resp.status == 200 and (await resp.json())["draining"] is False
    assert recorder.draining == set()
    resp = await client.post("/admin/nodes/n0000000000/drain", headers=admin_headers)
    assert resp.status == 404 and "n0000000000" in (await resp.json())["message"]
    entries = list(reversed(await audit_entries(client, action="computenode.*")))
    assert [(e.action, e.target, e.outcome) for e in entries] == [
        ("computenode.drain", name, "ok"),
        ("computenode.undrain", name, "ok"),
        ("computenode.drain", "n0000000000", "failed"),
    ]


async def test_only_owners(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    headers = await user_headers(client, "carl", "Contributor")
    for method, path in (
        ("GET", "/admin/nodes"),
        ("POST", "/admin/nodes/local/drain"),
        ("DELETE", "/admin/nodes/local/drain"),
    ):
        assert (await client.request(method, path, headers=headers)).status == 403
        assert (await client.request(method, path)).status == 401
    assert recorder.draining == set()


async def test_an_engine_without_nodes_says_so(aiohttp_client: Any, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(node_settings(data_dir)))
    headers = bearer((await login(client))["access_token"])
    body = await (await client.get("/admin/nodes", headers=headers)).json()
    assert body["nodes"] == [] and body["sshPublicKey"] is None
    assert "this machine only" in body["error"]
    resp = await client.post("/admin/nodes/local/drain", headers=headers)
    assert resp.status == 404
