"""An app on the fake engine with a recording ``NodeControl`` set on its ``Engine``: what
the routes hand the engine is what the tests read (the real engine's nodes are tested in
``tests/nodes/``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.errors import EngineUnavailable, NotFoundError
from controller.runtime import engines
from controller.runtime.engines import Engine
from controller.runtime.nodes import LOCAL, NodeAddress, parse_node
from controller.settings import Settings
from tests.conftest import make_settings


class RecordingNodes:
    """A ``NodeControl`` that keeps every list it was given; ``refuse`` makes ``apply`` of
    a list holding that entry fail as an engine would."""

    def __init__(self) -> None:
        self.applied: list[list[str]] = []
        self.refuse: str | None = None
        self.lost: set[str] = set()
        self.draining: set[str] = set()

    def entries(self) -> list[str]:
        return self.applied[-1] if self.applied else []

    async def apply(self, entries: list[NodeAddress]) -> None:
        listed = [e.entry for e in entries]
        await asyncio.sleep(0.01)  # as a real engine would, connecting
        if self.refuse is not None and self.refuse in listed:
            raise EngineUnavailable(f"cannot reach {self.refuse}")
        self.applied.append(listed)

    async def describe(self) -> list[dict[str, Any]]:
        nodes = [(LOCAL, "unix:///var/run/docker.sock")]
        nodes += [(parse_node(e).name, e) for e in self.entries()]
        return [self._node(name, entry) for name, entry in nodes]

    def _node(self, name: str, entry: str) -> dict[str, Any]:
        state = "lost" if entry in self.lost else "up"  # a drain is a flag beside the state
        return {
            "name": name,
            "entry": entry,
            "state": state,
            "draining": name in self.draining,
            "version": "27.0",
            "containers": {"session": 0},
            "load": 0.0,
            "error": "the link is down" if state == "lost" else None,
        }

    async def drain(self, name: str, draining: bool) -> None:
        if name not in {n["name"] for n in await self.describe()}:
            raise NotFoundError(f"no compute node '{name}'")
        (self.draining.add if draining else self.draining.discard)(name)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> RecordingNodes:
    """The fake engine of this test's apps, with ``RecordingNodes`` as its ``nodes``."""
    nodes = RecordingNodes()
    fake = engines.ENGINES["fake"]

    @contextlib.asynccontextmanager
    async def with_nodes(settings: Settings) -> AsyncIterator[Engine]:
        async with fake(settings) as engine:
            yield dataclasses.replace(engine, nodes=nodes)

    monkeypatch.setitem(engines.ENGINES, "fake", with_nodes)
    return nodes


def node_settings(data_dir: Path, **overrides: Any) -> Settings:
    """This test's settings on the fake engine, with pinned host keys for ssh:// nodes."""
    values: dict[str, Any] = {"engine": "fake", "ssh_known_hosts": data_dir / "known_hosts"}
    return make_settings(data_dir, **{**values, **overrides})


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return node_settings(data_dir)


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, recorder: RecordingNodes
) -> AsyncIterator[TestClient[Any, Any]]:
    """The app, started with ``recorder`` as its engine's nodes."""
    yield await aiohttp_client(create_app(settings))
