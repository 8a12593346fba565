"""GET /status: the 9.3 StatusResponse tree."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import DATABASE

pytestmark = pytest.mark.docker


async def test_status_reports_each_component(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.get("/status", headers=admin_headers)
    assert resp.status == 200
    body = await resp.json()
    assert body["statusCode"] in ("pass", "warn")
    components = body["components"]
    expected = {
        "database",
        "dockerEngine",
        "runtimeImage",
        "computeNodes",
        "disk",
        "openFiles",
        "runc",
    }
    assert set(components) == expected
    assert components["computeNodes"]["statusCode"] == "pass"
    assert components["computeNodes"]["components"]["local"]["details"]["state"] == "up"
    assert components["database"]["statusCode"] == "pass"
    assert components["database"]["details"]["type"] == DATABASE  # sqlite or postgres
    assert components["dockerEngine"]["statusCode"] == "pass"
    assert components["dockerEngine"]["details"]["version"]
    assert components["runtimeImage"]["statusCode"] == "pass"
    assert components["disk"]["details"]["freeBytes"] > 0
    for component in components.values():
        assert set(component) == {"statusCode", "components", "details"}


async def test_status_needs_a_token(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/status")
    assert resp.status == 401


async def test_a_missing_runtime_image_fails_the_status(aiohttp_client: Any, data_dir: Any) -> None:
    from controller.app import create_app
    from tests.conftest import bearer, login, make_settings

    client = await aiohttp_client(
        create_app(make_settings(data_dir, runtime_image="o16n-runtime:missing"))
    )
    headers = bearer((await login(client))["access_token"])
    body = await (await client.get("/status", headers=headers)).json()
    assert body["statusCode"] == "fail"
    assert body["components"]["runtimeImage"]["statusCode"] == "fail"
    assert "make image" in body["components"]["runtimeImage"]["details"]["error"]


async def test_status_answers_within_a_second_while_file_work_holds_every_thread(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """Long file work (tarballs being written) can hold every thread of the shared default
    executor; the disk check does not queue behind it."""
    await client.get("/status", headers=admin_headers)  # the cached engine checks are fresh
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, time.sleep, 0.5) for _ in range(64)]
    start = time.monotonic()
    resp = await client.get("/status", headers=admin_headers)
    elapsed = time.monotonic() - start
    await asyncio.gather(*busy)
    assert resp.status == 200
    assert elapsed < 1.0, elapsed
    assert (await resp.json())["components"]["disk"]["statusCode"] in ("pass", "warn")


async def test_ready_needs_no_token_and_says_no_while_draining(
    client: Any, admin_headers: dict[str, str]
) -> None:
    """A load balancer's health check: 200 without a token, 503 while the node drains."""
    resp = await client.get("/status/ready")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"ready": True}
    resp = await client.post("/admin/node/drain", json={"reason": "upgrade"}, headers=admin_headers)
    assert resp.status == 200, await resp.text()
    resp = await client.get("/status/ready")
    assert resp.status == 503
    assert await resp.json() == {"ready": False, "reason": "draining"}


async def test_ready_stays_200_when_what_the_group_shares_fails(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database (shared by every controller of a group) failing must not take every
    controller out of the balancer at once: consumes need no database."""
    from controller.errors import StoreBusy
    from controller.store.db import DB

    async def busy() -> float:
        raise StoreBusy("the database is busy; try again shortly")

    monkeypatch.setattr(client.app[DB], "ping", busy)
    resp = await client.get("/status/ready")
    assert resp.status == 200, await resp.text()
