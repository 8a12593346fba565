"""A service pool whose containers fail to start backs off: requests meanwhile get a quick
503 saying why, instead of each starting (and failing) one more container."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import publish

pytestmark = pytest.mark.docker


async def test_failing_service_starts_back_off(
    aiohttp_client: Any, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    await publish(client, headers, "Doomed", "1", code="y = 1")
    engine = docker.from_env()
    label = [f"o16n.instance={settings.instance}", "o16n.kind=service"]
    deadline = time.monotonic() + 60
    while not (started := engine.containers.list(filters={"label": label})):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    [image] = {
        t
        for i in engine.images.list(filters={"label": f"o16n.instance={settings.instance}"})
        for t in i.tags
    }
    engine.images.remove(image, force=True)  # its own image is gone: every start fails
    caplog.set_level(logging.WARNING, logger="controller.services.pool")
    started[0].kill()  # its container dies; the pool replaces it, and fails to

    statuses = []
    began = time.monotonic()
    while time.monotonic() - began < 4.0:
        resp = await client.post("/api/Doomed/1", json={}, headers=headers)
        statuses.append(resp.status)
        await asyncio.sleep(0.1)
    attempts = [r for r in caplog.records if r.getMessage() == "service container failed to start"]
    # 0, 1, 3 s: three at most, where each request starting one would make dozens
    assert 1 <= len(attempts) <= 3, len(attempts)
    assert set(statuses) == {503}
    # between two starts the 503 says why and when the next one is; a request that comes
    # while one is under way waits for it and hears only why (tried until a quiet moment)
    for _ in range(60):
        body = await (await client.post("/api/Doomed/1", json={}, headers=headers)).json()
        assert "is missing" in body["message"], body
        if "next start" in body["message"]:
            break
        await asyncio.sleep(0.1)
    assert "next start" in body["message"], body
    await client.close()
