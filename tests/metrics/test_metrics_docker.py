"""``/metrics`` with real containers: a consume's outcomes, the engine calls it took,
the container it started and its end when the service is deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.metrics.conftest import scrape
from tests.services.conftest import consume, publish

pytestmark = pytest.mark.docker


async def test_a_service_on_docker_in_the_metrics(aiohttp_client: Any, data_dir: Path) -> None:
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    before = await scrape(client, headers)
    await publish(
        client,
        headers,
        "DockerMetered",
        "1",
        code="y = 10 / x",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "numeric"}],
    )
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
