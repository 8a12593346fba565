"""At start: ``O16N_COMPUTE_NODES``, when set, replaces the stored list (audited as by
``settings``); the stored list goes to the engine; an engine without compute nodes refuses
to start with entries to apply."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from controller.app import create_app
from controller.audit.log import AUDIT
from controller.settings import Settings, SettingsError
from controller.store.audit import AuditQuery
from controller.store.db import DB
from controller.store.nodes import NodesRepo
from tests.computenodes.conftest import RecordingNodes, node_settings

A, C = "ssh://o16n@node-a", "unix:///run/docker-c.sock"


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings))
    try:
        await server.start_server()
        yield server
    finally:
        await server.close()


async def stored(server: TestServer) -> list[str]:
    return await NodesRepo(server.app[DB]).entries()


async def settings_changes(server: TestServer) -> list[dict[str, Any]]:
    entries = await server.app[AUDIT].page(AuditQuery(actor="settings"))
    assert all(e.action == "computenodes.set" for e in entries)
    return [e.detail for e in reversed(entries)]


async def test_the_setting_replaces_the_stored_list_and_is_applied(
    data_dir: Path, recorder: RecordingNodes
) -> None:
    async with running(node_settings(data_dir, compute_nodes=f"{A}, {C}")) as server:
        assert await stored(server) == [A, C]
        assert recorder.applied == [[A, C]]
        assert await settings_changes(server) == [{"before": [], "after": [A, C]}]
        await NodesRepo(server.app[DB]).replace([C], "admin")  # as /computenodes would
    async with running(node_settings(data_dir)) as server:  # unset: the stored list is kept
        assert await stored(server) == [C]
        assert recorder.applied[-1] == [C]
        assert await settings_changes(server) == [{"before": [], "after": [A, C]}]
    async with running(node_settings(data_dir, compute_nodes=C)) as server:
        assert await settings_changes(server) == [{"before": [], "after": [A, C]}]  # no change
    async with running(node_settings(data_dir, compute_nodes=A)) as server:
        assert await stored(server) == [A]
        assert recorder.applied[-1] == [A]
        assert (await settings_changes(server))[-1] == {"before": [C], "after": [A]}


async def test_an_engine_without_nodes_does_not_start_with_entries(data_dir: Path) -> None:
    with pytest.raises(SettingsError, match="this machine only"):
        async with running(node_settings(data_dir, compute_nodes=C)):
            pass
    async with running(node_settings(data_dir)) as server:  # nothing was stored
        assert await stored(server) == []
        await NodesRepo(server.app[DB]).replace([C], "admin")
    with pytest.raises(SettingsError, match="this machine only"):  # a stored list: the same
        async with running(node_settings(data_dir)):
            pass


async def test_stored_ssh_nodes_need_known_hosts_at_start(
    data_dir: Path, recorder: RecordingNodes
) -> None:
    async with running(node_settings(data_dir, compute_nodes=A)):
        pass
    with pytest.raises(SettingsError, match="O16N_SSH_KNOWN_HOSTS"):
        async with running(node_settings(data_dir, ssh_known_hosts=None)):
            pass


async def test_a_stored_entry_that_no_longer_parses_stops_the_start_and_the_setting_fixes_it(
    data_dir: Path, recorder: RecordingNodes
) -> None:
    async with running(node_settings(data_dir)) as server:
        await server.app[DB].execute(
            "INSERT INTO compute_nodes VALUES ('tcp://10.0.0.1:2375', 0, 0, 'admin')"
        )
    with pytest.raises(SettingsError, match=r"stored compute node 'tcp://10\.0\.0\.1:2375'"):
        async with running(node_settings(data_dir)):
            pass
    async with running(node_settings(data_dir, compute_nodes=C)) as server:
        assert await stored(server) == [C]
