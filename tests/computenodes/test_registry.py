"""``ComputeNodes`` without HTTP: a change whose apply is cancelled half way (a client that
hangs up, a shutdown) is put back in the store and the engine like one the engine refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from controller.audit.log import AuditLog
from controller.computenodes.registry import ComputeNodes
from controller.runtime.engines import Engine
from controller.runtime.nodes import NodeAddress, parse_node
from controller.store.audit import AuditRepo
from controller.store.db import open_database
from controller.store.nodes import NodesRepo
from tests.computenodes.conftest import RecordingNodes, node_settings
from tests.conftest import make_settings

A, C = "ssh://o16n@node-a", "unix:///run/docker-c.sock"


class HangingNodes(RecordingNodes):
    """Hangs in ``apply`` of any list holding ``hang_on``, until cancelled."""

    def __init__(self, hang_on: str) -> None:
        super().__init__()
        self.hang_on = hang_on
        self.hanging = asyncio.Event()

    async def apply(self, entries: list[NodeAddress]) -> None:
        if self.hang_on in [e.entry for e in entries]:
            self.hanging.set()
            await asyncio.Event().wait()
        await super().apply(entries)


async def test_a_cancelled_change_is_put_back(tmp_path: Path) -> None:
    db = await open_database(make_settings(tmp_path))
    try:
        nodes = HangingNodes(hang_on=C)
        environments = SimpleNamespace(base="o16n-runtime:stub")
        engine = Engine("stub", None, environments, nodes=nodes)  # type: ignore[arg-type]
        settings = node_settings(tmp_path)
        registry = ComputeNodes(NodesRepo(db), engine, settings, AuditLog(AuditRepo(db), 1))
        await registry.replace([parse_node(A)], "admin")
        change: asyncio.Task[Any] = asyncio.create_task(registry.add([parse_node(C)], "admin"))
        await nodes.hanging.wait()
        assert await registry.entries() == [A, C]  # stored first
        change.cancel()
        with pytest.raises(asyncio.CancelledError):
            await change
        assert await registry.entries() == [A]
        assert nodes.applied == [[A], [A]]  # the old list handed back
    finally:
        await db.close()


async def test_a_list_another_controller_changed_reaches_this_engine(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two controllers of a group on one database: a change through one is handed to the
    other's engine within a second or two, so both place containers on the same nodes."""
    from controller.store.db import open_database
    from tests.conftest import make_settings

    settings = make_settings(data_dir)
    first, second = await open_database(settings), await open_database(settings)
    try:
        environments = SimpleNamespace(base="o16n-runtime:stub")
        here, there = RecordingNodes(), RecordingNodes()
        registries = []
        for db, nodes in ((first, here), (second, there)):
            engine = Engine("stub", None, environments, nodes=nodes)  # type: ignore[arg-type]
            audit = AuditLog(AuditRepo(db), 1)
            registries.append(ComputeNodes(NodesRepo(db), engine, node_settings(tmp_path), audit))
        watch = asyncio.create_task(registries[1].watch(interval=0.1))
        await asyncio.sleep(0.3)  # it has read the count
        try:
            await registries[0].replace([parse_node(A), parse_node(C)], "admin")
            for _ in range(100):  # 5 s at most
                if there.applied and there.applied[-1] == [A, C]:
                    break
                await asyncio.sleep(0.05)
            assert there.applied[-1] == [A, C]
        finally:
            watch.cancel()
    finally:
        await first.close()
        await second.close()
