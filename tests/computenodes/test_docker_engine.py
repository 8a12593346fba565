"""``/computenodes`` on the Docker engine itself: a node that does not answer as an engine
is listed and kept trying (``connecting``, its error shown), ``/status`` warns, and
removing it leaves the local engine alone. (Nodes that answer: ``tests/nodes/``.)

The node is a Unix socket that hangs up on every connection: a socket path with no
listener at all would do too, but docker-py leaks the socket of a connect that fails (a
``ResourceWarning`` when it is collected), which this suite counts as an error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from controller.app import create_app
from tests.conftest import bearer, login, make_settings

pytestmark = pytest.mark.docker


async def test_an_unreachable_node_is_listed_warned_about_and_removed(
    aiohttp_client: Any, data_dir: Path
) -> None:
    path = data_dir / "not-an-engine.sock"
    server = await asyncio.start_unix_server(_hang_up, path=str(path))
    try:
        await _check(aiohttp_client, data_dir, f"unix://{path}")
    finally:
        server.close()
        await server.wait_closed()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _check(aiohttp_client: Any, data_dir: Path, entry: str) -> None:
    settings = make_settings(
        data_dir, status_cache_seconds=0, warm_pool_size=0, service_warm_pool_size=0
    )
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    resp = await client.post("/computenodes", json={"entries": [entry]}, headers=headers)
    assert resp.status == 200, await resp.text()
    nodes = (await (await client.get("/admin/nodes", headers=headers)).json())["nodes"]
    assert nodes[0]["name"] == "local"
    far = next(n for n in nodes if n["entry"] == entry)
    assert far["state"] in ("connecting", "lost") and far["error"]
    status = await (await client.get("/status", headers=headers)).json()
    component = status["components"]["computeNodes"]
    assert component["statusCode"] == "warn"
    assert component["components"]["local"]["statusCode"] == "pass"
    resp = await client.delete("/computenodes", json={"entries": [entry]}, headers=headers)
    assert resp.status == 200 and (await resp.json()) == {"computeNodes": []}
    nodes = (await (await client.get("/admin/nodes", headers=headers)).json())["nodes"]
    assert [(n["name"], n["state"]) for n in nodes] == [("local", "up")]
    await client.close()  # before the socket goes: no attempt at a path that is gone
