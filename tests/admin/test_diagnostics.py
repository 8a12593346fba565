"""``POST /admin/diagnostics``: every step passes on a healthy node; a failing step is
reported with its error while the others still run; nothing it made is left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.admin.diagnostics import BACKGROUND, TIMEOUTS, Run
from controller.app import create_app
from controller.reserved_names import PREFIX
from controller.services.registry import SERVICES
from controller.sessions.manager import SESSIONS
from controller.settings import SETTINGS
from controller.store.db import DB
from tests.admin.conftest import audit_entries
from tests.auth.test_accounts import cli
from tests.conftest import bearer, login, make_settings, user_headers

pytestmark = pytest.mark.docker

STEPS = ["database", "engine", "runtimeImage", "session", "service", "token", "disk"]


async def assert_nothing_left(client: TestClient[Any, Any], name: str) -> None:
    """No container, image, session, service or user of the run ``name`` remains."""
    app = client.app
    assert name.startswith(PREFIX)
    assert not [s for s in app[SESSIONS].everyone() if s.owner_name == name]
    assert not [s for s in app[SERVICES].all() if s.record.name.startswith(PREFIX)]
    rows = await app[DB].fetchall("SELECT username FROM users WHERE username LIKE 'o16n-diag%'")
    assert rows == []
    for table in ("sessions", "services"):
        assert await app[DB].fetchall(f"SELECT * FROM {table}") == []
    engine = docker.from_env()
    try:
        instance = app[SETTINGS].instance
        containers = engine.containers.list(
            all=True, sparse=True, filters={"label": f"o16n.instance={instance}"}
        )
        owners = [(c.attrs.get("Labels") or {}).get("o16n.owner", "") for c in containers]
        assert not [o for o in owners if o.startswith(PREFIX)]
        tags = [t for i in engine.api.images(name="o16n-service") for t in i.get("RepoTags") or ()]
        assert not [t for t in tags if instance in t]
    finally:
        engine.close()


async def test_diagnostics_pass_on_a_healthy_node_and_leave_nothing(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/admin/diagnostics", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert [s["name"] for s in report["steps"]] == STEPS
    assert report["status"] == "pass", report
    for step in report["steps"]:
        assert step["status"] == "pass" and step["error"] is None, step
        assert step["durationMs"] >= 0
    session = next(s for s in report["steps"] if s["name"] == "session")
    assert session["details"]["consoleOutput"] == "5\n"
    assert report["durationMs"] < 60_000
    assert report["cleanup"] == {"status": "pass", "errors": []}
    await assert_nothing_left(client, report["name"])

    entries = await audit_entries(client, action="node.diagnostics")
    assert [(e.actor, e.outcome, e.target) for e in entries] == [("admin", "ok", "node:pass")]


async def test_diagnostics_run_while_draining(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/admin/node/drain", headers=admin_headers)
    assert resp.status == 200
    report = await (await client.post("/admin/diagnostics", headers=admin_headers)).json()
    assert report["status"] == "pass", report
    await assert_nothing_left(client, report["name"])


@pytest.fixture
async def broken_client(aiohttp_client: Any, data_dir: Path) -> AsyncIterator[Any]:
    """A server whose runtime image setting names an image that does not exist."""
    settings = make_settings(data_dir, runtime_image=f"o16n-runtime:{PREFIX}missing")
    yield await aiohttp_client(create_app(settings))


async def test_a_failing_step_is_reported_and_the_others_still_run(
    broken_client: TestClient[Any, Any],
) -> None:
    headers = bearer((await login(broken_client))["access_token"])
    resp = await broken_client.post("/admin/diagnostics", headers=headers)
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == STEPS
    assert report["status"] == "fail"
    assert steps["runtimeImage"]["status"] == "fail"
    assert "missing" in steps["runtimeImage"]["error"]
    assert steps["session"]["status"] == "fail" and steps["session"]["error"]
    for name in ("database", "engine", "token", "disk"):
        assert steps[name]["status"] == "pass", steps[name]
    assert "runtimeImage" in report["failed"]
    assert report["durationMs"] < 60_000
    assert report["cleanup"]["status"] == "pass", report["cleanup"]
    await assert_nothing_left(broken_client, report["name"])
    entries = await audit_entries(broken_client, action="node.diagnostics")
    assert [(e.outcome, e.target) for e in entries] == [("ok", "node:fail")]


async def test_a_step_that_times_out_leaves_nothing_behind(
    client: TestClient[Any, Any], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session and the service are still being made when their time is up."""
    monkeypatch.setitem(TIMEOUTS, "session", 0.01)
    monkeypatch.setitem(TIMEOUTS, "service", 0.01)
    report = await (await client.post("/admin/diagnostics", headers=admin_headers)).json()
    steps = {s["name"]: s for s in report["steps"]}
    for name in ("session", "service"):
        assert steps[name]["status"] == "fail"
        assert steps[name]["error"] == "did not finish within 0.01 s"
    assert steps["token"]["status"] == "pass"
    # on a loaded machine the launch may outlast the cleanup's 8 s: it then goes on after
    # the reply, and must still remove everything
    assert report["cleanup"]["status"] == "pass" or report["cleanup"]["errors"] == [BACKGROUND]
    for _ in range(400):
        try:
            await assert_nothing_left(client, report["name"])
            break
        except AssertionError:
            await asyncio.sleep(0.1)
    await assert_nothing_left(client, report["name"])


async def test_diagnostics_are_for_owners_only(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/admin/diagnostics")
    assert resp.status == 401
    for role in ("Contributor", "Reader"):
        headers = await user_headers(client, f"someone-{role.lower()}", role)
        resp = await client.post("/admin/diagnostics", headers=headers)
        assert resp.status == 403
        assert "Owner" in (await resp.json())["message"]
    entries = await audit_entries(client, action="node.diagnostics")
    assert [e.outcome for e in entries] == ["denied", "denied"]


async def test_the_diagnostics_prefix_is_reserved(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    name = PREFIX + "0000"
    resp = await client.post(
        "/admin/users", json={"name": name, "password": "password-123"}, headers=admin_headers
    )
    assert resp.status == 400 and "reserved" in (await resp.json())["message"]
    for path in (f"/services/{name}", f"/services/{name}/1"):
        resp = await client.post(path, json={"code": "x = 1"}, headers=admin_headers)
        assert resp.status == 400 and "reserved" in (await resp.json())["message"]
    # a run's temporary service (made as diagnostics makes it) is hidden from everyone
    run = Run(client.app, "-")
    run.name = name
    await run.service()
    user = await user_headers(client, "curious")
    for headers in (user, admin_headers):
        listed = await (await client.get("/services", headers=headers)).json()
        assert [s for s in listed if s["name"] == name] == []
        for method, path in (
            ("GET", f"/services/{name}"),
            ("GET", f"/services/{name}/1"),
            ("DELETE", f"/services/{name}/1"),
            ("POST", f"/api/{name}/1"),
            ("GET", f"/api/{name}/1/swagger.json"),
        ):
            resp = await client.request(method, path, json={"x": 1}, headers=headers)
            assert resp.status == 404, (method, path)
    assert await run.cleanup() == []
    await assert_nothing_left(client, name)
    out = cli(
        client.app[SETTINGS].data_dir, "users", "add", name, "--password-stdin", stdin="x" * 9
    )
    assert out.returncode == 1 and "reserved" in out.stderr
