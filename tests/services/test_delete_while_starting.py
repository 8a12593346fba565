"""A service deleted while its pool's first container is still starting loses its image
as soon as that container has gone, not a quarter of an hour later at the periodic reap."""

from __future__ import annotations

import asyncio
from typing import Any

import docker
import pytest
from aiohttp.test_utils import TestClient

from controller.services.registry import SERVICES
from controller.settings import SETTINGS
from tests.services.conftest import publish

pytestmark = pytest.mark.docker


def _service_containers(instance: str) -> list[Any]:
    labels = [f"o16n.instance={instance}", "o16n.kind=service"]
    client = docker.from_env()
    try:  # sparse: no inspect of each listed container, which may be removed in between
        return client.containers.list(all=True, sparse=True, filters={"label": labels})
    finally:
        client.close()


def _image_exists(name: str) -> bool:
    client = docker.from_env()
    try:
        return bool(client.api.images(name=name))
    finally:
        client.close()


async def test_the_image_of_a_service_deleted_while_its_container_starts_goes(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    instance = client.app[SETTINGS].instance
    await publish(client, admin_headers, "Starting", "1", code="y = 1")
    image = client.app[SERVICES].get("Starting", "1").record.image
    for _ in range(300):  # the pool's container exists, its agent has not dialled in yet
        if await asyncio.to_thread(_service_containers, instance):
            break
        await asyncio.sleep(0.02)
    resp = await client.delete("/services/Starting/1", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    for _ in range(300):
        if not await asyncio.to_thread(_image_exists, image):
            break
        await asyncio.sleep(0.1)
    assert not await asyncio.to_thread(_image_exists, image), f"{image} is still there"
