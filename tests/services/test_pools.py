"""The 9.3 pool endpoints and pools across a controller restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.runtime.sandboxes import SANDBOXES
from controller.settings import Settings
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Container counts here go by labels, and a container taken from the services' warm
    pool keeps its warm labels: keep that pool out of these tests (tests/clients and
    test_consume.py run with it)."""
    return make_settings(data_dir, service_warm_pool_size=0)


def _containers(settings: Any) -> list[Any]:
    label = [f"o16n.instance={settings.instance}", "o16n.kind=service"]
    # sparse: no inspect of each listed container, which may be removed in between
    return docker.from_env().containers.list(sparse=True, filters={"label": label})


async def _services(client: TestClient[Any, Any]) -> int:
    """How many service containers the app's engine runs (whichever engine that is)."""
    count = 0
    for handle in await client.app[SANDBOXES].runtime.list_owned():
        if handle.kind == "service" and await client.app[SANDBOXES].runtime.poll(handle) is None:
            count += 1
    return count


async def _until(predicate: Any, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


def _count(client: TestClient[Any, Any], expected: int) -> Any:
    async def reached() -> bool:
        return await _services(client) == expected

    return reached


async def test_pool_endpoints(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Any
) -> None:
    await publish(client, admin_headers, "Pooled", "1", code="y = 1")
    for _ in range(300):
        status = await (await client.get("/services/Pooled/1/pool", headers=admin_headers)).json()
        if status[0]["status"] == "Success":
            break
        assert status[0]["status"] == "Pending"
        await asyncio.sleep(0.1)
    assert status[0]["ready"] == 1 and status[0]["computeNodeEndpoint"]
    assert await _services(client) == 1
    resp = await client.post(
        "/services/Pooled/1/pool",
        json={"InitialPoolSize": 3, "MaxPoolSize": 4},
        headers=admin_headers,
    )
    assert resp.status == 200 and await resp.json() == "Created."
    await _until(_count(client, 3))
    for bad in (
        {"InitialPoolSize": 5, "MaxPoolSize": 2},
        {"MaxPoolSize": 0},
        {"MaxPoolSize": 10_000},
        {"InitialPoolSize": -1},
    ):
        resp = await client.post("/services/Pooled/1/pool", json=bad, headers=admin_headers)
        assert resp.status == 400, bad
    resp = await client.post(
        "/services/Pooled/1/pool",
        json={"initialPoolSize": 1, "maxPoolSize": 1},
        headers=admin_headers,
    )  # any casing
    assert resp.status == 200
    await _until(_count(client, 1))
    resp = await client.delete("/services/Pooled/1/pool", headers=admin_headers)
    assert await resp.json() == "Deleted."
    await _until(_count(client, 0))
    status = await (await client.get("/services/Pooled/1/pool", headers=admin_headers)).json()
    assert status[0]["status"] == "NotFound"
    assert (await consume(client, admin_headers, "Pooled", "1", {}))["success"]  # starts on demand
    assert (await client.get("/services/Nope/1/pool", headers=admin_headers)).status == 404


@pytest.mark.docker  # images, by name: the Docker engine's environments
async def test_services_survive_a_restart_and_pools_rewarm(
    aiohttp_client: Any, data_dir: Any
) -> None:
    settings = make_settings(data_dir, service_warm_pool_size=0)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    await publish(
        first,
        headers,
        "Durable",
        "1",
        code="y = x + 1",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    await consume(first, headers, "Durable", "1", {"x": 1})
    resp = await first.post(
        "/services/Durable/1/pool", json={"InitialPoolSize": 2, "MaxPoolSize": 3}, headers=headers
    )
    assert resp.status == 200
    await first.close()
    assert _containers(settings) == []  # service containers go with their controller
    engine = docker.from_env()
    [service_image] = [
        t
        for i in engine.images.list(name="o16n-service")
        for t in i.tags
        if t.startswith(f"o16n-service:{settings.instance}-")
    ]
    orphan = f"o16n-service:{settings.instance}-0123456789abcdef"  # as if a crash left it
    engine.images.get(service_image).tag(orphan)
    second = await aiohttp_client(create_app(settings))
    names = {t for i in engine.images.list(name="o16n-service") for t in i.tags}
    assert service_image in names and orphan not in names
    await _until(_count(second, 2))  # the pool size it was given
    headers = bearer((await login(second))["access_token"])
    assert (await consume(second, headers, "Durable", "1", {"x": 41}))["outputParameters"] == {
        "y": 42
    }
