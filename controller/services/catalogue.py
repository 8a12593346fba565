"""The published services in memory: each version's record, pool and request shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.errors import NotFoundError
from controller.services.pool import ServicePool
from controller.services.realtime.model import ModelSchema
from controller.store.services import ServiceRecord


@dataclass(eq=False)
class Service:
    record: ServiceRecord
    pool: ServicePool
    inputs: list[tuple[str, str, str]] = field(default_factory=list)  # name, kind, declared
    document: dict[str, Any] = field(default_factory=dict)
    #: a realtime service's model (``None``: a Python service)
    model: ModelSchema | None = None

    @property
    def label(self) -> str:
        return f"{self.record.name}/{self.record.version}"


class Catalogue:
    """Every published version by name and version, in publishing order (the SDK takes
    the last version as the latest)."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, str], Service] = {}

    def get(self, name: str, version: str) -> Service:
        service = self._services.get((name, version))
        if service is None:
            raise NotFoundError(f"no web service '{name[:128]}' with version '{version[:64]}'")
        return service

    def versions(self, name: str) -> list[Service]:
        """Every version of ``name``, oldest first (the SDK takes the last as the latest)."""
        return [s for (n, _), s in self._services.items() if n == name]

    def all(self) -> list[Service]:
        return list(self._services.values())

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._services

    def put(self, service: Service) -> None:
        """Add a version, or replace it in its place."""
        self._services[(service.record.name, service.record.version)] = service

    def sort(self) -> None:
        """Back in publishing order, after versions were added in another (another
        controller published them: ``ServiceRegistry.refresh``)."""
        ordered = sorted(self._services.items(), key=lambda item: item[1].record.created_at)
        self._services = dict(ordered)

    def remove(self, name: str, version: str) -> None:
        del self._services[(name, version)]

    def __len__(self) -> int:
        return len(self._services)
