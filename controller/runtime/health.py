"""Health of the runtime: does the Docker engine answer, is the runtime image there.

Checks are cached for a couple of seconds, so a load balancer polling ``/status`` does not
turn into a stream of Docker API calls.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from controller.errors import O16nError
from controller.runtime.docker_gateway import DockerGateway

CACHE_SECONDS = 2.0


def node(
    status: str, details: dict[str, Any] | None = None, components: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One node of the 9.3 ``StatusResponse`` tree."""
    return {"statusCode": status, "components": components or {}, "details": details or {}}


class EngineProbe:
    """Cached checks of the Docker engine and the runtime image."""

    def __init__(self, gateway: DockerGateway, image: str) -> None:
        self._gateway = gateway
        self._image = image
        self._at = 0.0
        self._result: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[dict[str, Any], dict[str, Any]]:
        async with self._lock:
            if self._result is None or time.monotonic() - self._at > CACHE_SECONDS:
                self._result = await self._check()
                self._at = time.monotonic()
            return self._result

    async def _check(self) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            info = await self._gateway.info()
            engine = node(
                "pass",
                {
                    "version": info.version,
                    "apiVersion": info.api_version,
                    "containersRunning": info.containers_running,
                    "storageDriver": info.storage_driver,
                },
            )
        except O16nError as exc:
            return node("fail", {"error": exc.message}), node("fail", {"image": self._image})
        try:
            size = await self._gateway.image_size(self._image)
            image = node("pass", {"image": self._image, "sizeBytes": size})
        except O16nError:
            image = node(
                "fail",
                {
                    "image": self._image,
                    "error": "the runtime image is missing; build it with `make image`",
                },
            )
        return engine, image
