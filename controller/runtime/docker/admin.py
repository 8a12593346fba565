"""What the Docker engine tells the operator: ``/admin/node``'s engine, containers, images
and disk use, and ``/status``'s engine facts. Every call runs on the gateway's thread pools
(``docker system df`` on the slow one, at most once a minute)."""

from __future__ import annotations

import asyncio
from typing import Any

from controller.errors import O16nError
from controller.runtime.docker.environments import DockerEnvironments
from controller.runtime.docker.gateway import DockerGateway
from controller.runtime.docker.stats import StatsSampler
from controller.runtime.spec import LABEL_PREFIX


class DockerReport:
    def __init__(
        self,
        gateway: DockerGateway,
        environments: DockerEnvironments,
        sampler: StatsSampler,
        instance: str,
    ) -> None:
        self._gateway = gateway
        self._environments = environments
        self._sampler = sampler
        self._instance = instance

    async def about(self) -> dict[str, Any]:
        info = await self._gateway.info()
        return {
            "version": info.version,
            "apiVersion": info.api_version,
            "containersRunning": info.containers_running,
            "storageDriver": info.storage_driver,
        }

    async def base_size(self) -> int:
        return await self._gateway.image_size(self._environments.base)

    async def node(self, engine_disk: bool) -> dict[str, Any]:
        async def skipped() -> dict[str, Any]:
            return {"skipped": True}

        engine, containers, images, disk = await asyncio.gather(
            self._engine(),
            self._containers(),
            self._images(),
            self._engine_disk() if engine_disk else skipped(),
        )
        return {"engine": engine, "containers": containers, "images": images, "engineDisk": disk}

    async def _engine(self) -> dict[str, Any]:
        try:
            info, version = await self._gateway.engine_details()
        except O16nError as exc:
            return {"error": exc.message}
        components = {
            str(c.get("Name", "")).lower(): str(c.get("Version", "?"))
            for c in version.get("Components") or []
            if isinstance(c, dict)
        }
        return {
            "version": str(version.get("Version", "?")),
            "apiVersion": str(version.get("ApiVersion", "?")),
            "runc": components.get("runc"),
            "containerd": components.get("containerd"),
            "kernel": str(info.get("KernelVersion", "?")),
            "os": str(info.get("OperatingSystem", "?")),
            "cgroupVersion": str(info.get("CgroupVersion", "?")),
            "cgroupDriver": str(info.get("CgroupDriver", "?")),
            "storageDriver": str(info.get("Driver", "?")),
            "cpus": info.get("NCPU"),
            "memoryBytes": info.get("MemTotal"),
        }

    async def _containers(self) -> dict[str, Any]:
        """This instance's containers (by its labels), counted by kind and state."""
        try:
            found = await self._gateway.list_containers(f"{LABEL_PREFIX}instance={self._instance}")
        except O16nError as exc:
            return {"error": exc.message}
        kinds: dict[str, dict[str, int]] = {}
        for container in found:
            kind = container.labels.get(LABEL_PREFIX + "kind", "?")
            states = kinds.setdefault(kind, {})
            states[container.status] = states.get(container.status, 0) + 1
        return kinds

    async def _images(self) -> dict[str, Any]:
        runtime: dict[str, Any] = {"image": self._environments.base}
        try:
            runtime["sizeBytes"] = await self.base_size()
            runtime["present"] = True
            counts = {}  # by their exact labels, like every ownership question (never a name)
            for kind in ("service", "snapshot"):
                counts[kind] = await self._environments.count(kind)
        except O16nError as exc:
            runtime["present"] = False
            return {"runtime": runtime, "error": exc.message}
        return {
            "runtime": runtime,
            "services": counts["service"],
            "snapshots": counts["snapshot"],
        }

    async def _engine_disk(self) -> dict[str, Any]:
        try:
            return await self._sampler.engine_disk()
        except TimeoutError:
            return {"error": "docker system df did not answer in time"}
        except O16nError as exc:
            return {"error": exc.message}
