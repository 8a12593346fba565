"""The diagnostics cleanup reports nothing left only once the engine lists nothing: a
removal that returns while the engine is still at it (Docker's "already in progress",
when a closed session's container is being removed in the background) is waited for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.admin.diagnostics import Run
from controller.runtime.containers import ContainerHandle
from controller.runtime.engines import ENGINE
from controller.runtime.sandboxes import SANDBOXES


async def test_the_cleanup_waits_for_a_removal_the_engine_is_still_making(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(client.app, "-")
    sandbox = await client.app[SANDBOXES].launch("session", owner=run.name, ident="closing")
    runtime = client.app[ENGINE].runtime
    remove = runtime.remove
    removing: list[asyncio.Task[None]] = []

    async def slowly(handle: ContainerHandle) -> None:
        await asyncio.sleep(1.0)
        await remove(handle)

    async def in_progress(handle: ContainerHandle) -> None:
        """The first call starts the removal; it and every later one return at once."""
        if not removing:
            removing.append(asyncio.create_task(slowly(handle)))

    monkeypatch.setattr(runtime, "remove", in_progress)
    try:
        await run._containers()
        assert [h.key for h in await runtime.list_owned() if h.owner == run.name] == []
    finally:
        await asyncio.gather(*removing)
        monkeypatch.undo()
        await client.app[SANDBOXES].destroy(sandbox)
