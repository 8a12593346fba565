"""``/metrics`` with real containers: a consume's outcomes, the engine calls it took,
the container it started and its end when the service is deleted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import make_settings
from tests.metrics.conftest import owner_client, publish_divider, scrape
from tests.services.conftest import consume
from tests.sessions.conftest import new_session

pytestmark = pytest.mark.docker


async def test_a_service_on_docker_in_the_metrics(aiohttp_client: Any, data_dir: Path) -> None:
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client, headers = await owner_client(aiohttp_client, settings)
    before = await scrape(client, headers)
    await publish_divider(client, headers, "DockerMetered")
    assert (await consume(client, headers, "DockerMetered", "1", {"x": 2}))["success"]
    assert not (await consume(client, headers, "DockerMetered", "1", {"x": 0}))["success"]

    found = await scrape(client, headers)
    labels = {"service": "DockerMetered", "version": "1"}
    consumed = "o16n_consume_duration_seconds_count"
    assert found.value(consumed, outcome="success", **labels) == 1
    assert found.value(consumed, outcome="failure", **labels) == 1
    assert found.value("o16n_service_pool_containers", state="idle", **labels) == 1
    starts = "o16n_container_starts_total"
    assert (
        found.value(starts, kind="service", outcome="ok")
        - before.value(starts, kind="service", outcome="ok")
        == 1
    )
    calls = "o16n_docker_call_duration_seconds_count"
    for operation in ("create", "start", "inspect_image"):
        assert found.value(calls, operation=operation) > before.value(calls, operation=operation)

    resp = await client.delete("/services/DockerMetered/1", headers=headers)
    assert resp.status == 200, await resp.text()
    found = await scrape(client, headers)
    assert not [s for s in found.all if s.labels.get("service") == "DockerMetered"]
    deaths = "o16n_container_deaths_total"
    assert (
        found.value(deaths, kind="service", reason="removed")
        - before.value(deaths, kind="service", reason="removed")
        == 1
    )
    assert found.value(calls, operation="remove_container") > before.value(
        calls, operation="remove_container"
    )


async def test_a_killed_session_container_is_counted_as_killed_once(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client, headers = await owner_client(aiohttp_client, settings)
    before = await scrape(client, headers)
    session_id = await new_session(client, headers)
    engine = docker.from_env()
    try:
        [container] = engine.containers.list(
            filters={"label": [f"o16n.instance={settings.instance}", f"o16n.id={session_id}"]}
        )
        container.kill()
    finally:
        engine.close()
    for _ in range(100):  # the engine's event ends the session
        resp = await client.get(f"/sessions/{session_id}/console-output", headers=headers)
        if resp.status == 410:
            break
        await asyncio.sleep(0.05)
    assert resp.status == 410

    found = await scrape(client, headers)
    deaths = "o16n_container_deaths_total"

    def grown(reason: str) -> float:
        return found.value(deaths, kind="session", reason=reason) - before.value(
            deaths, kind="session", reason=reason
        )

    assert grown("killed") == 1
    assert grown("removed") == 0
    assert session_id not in found.text
