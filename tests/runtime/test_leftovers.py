"""What failures leave behind is swept: files of killed snapshots and publishes, socket
directories of containers that never started, containers whose removal failed; and a
pool whose starts fail backs off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


async def test_files_and_socket_directories_left_by_crashes_go_at_start(
    aiohttp_client: Any, data_dir: Path
) -> None:
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    live = await new_session(first, headers)
    await execute(first, headers, live, "n = 1")
    resp = await first.post(f"/sessions/{live}/snapshot", json={}, headers=headers)
    assert resp.status == 201
    [kept] = (data_dir / "snapshots").iterdir()
    await first.close()  # the session's container stays, to be adopted

    sockets = data_dir / "sockets"
    label = [f"o16n.instance={settings.instance}", f"o16n.id={live}"]
    [container] = docker.from_env().containers.list(filters={"label": label})
    live_socket_dir = sockets / container.labels["o16n.key"]
    assert live_socket_dir.is_dir()
    planted = [
        data_dir / "snapshots" / "0f0f0f0f-0000-4000-8000-000000000000.tar.gz.tmp",  # killed write
        data_dir / "snapshots" / "1f1f1f1f-0000-4000-8000-000000000000.tar.gz",  # row never written
        data_dir / "services" / "0123456789abcdef.tar.gz",  # a publish killed 10 ms in
    ]
    for path in planted[:2]:
        path.write_bytes(b"partial")
    planted[2].parent.mkdir(mode=0o700, exist_ok=True)
    os.link(kept, planted[2])
    empty = sockets / "00112233aabb"  # a failed start
    empty.mkdir()

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    assert not [p for p in planted if p.exists()] and not empty.exists()
    assert kept.exists() and live_socket_dir.exists()  # what is in use stays
    assert (await execute(second, headers, live, "n += 1", outputParameters=["n"]))[
        "outputParameters"
    ] == [{"name": "n", "value": 2}]
    await second.close()


@contextlib.contextmanager
def _unremovable(container: Any) -> Iterator[None]:
    """Make the engine fail to remove ``container`` for real: its upper layer directory is
    immutable (``chattr +i``), so ``docker rm -f`` fails with "operation not permitted"."""
    container.reload()
    upper = container.attrs["GraphDriver"]["Data"]["UpperDir"]
    subprocess.run(["chattr", "+i", upper], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", upper], check=True)


async def test_a_removal_that_fails_is_tried_again(aiohttp_client: Any, data_dir: Path) -> None:
    if os.geteuid() != 0 or not Path("/usr/bin/chattr").exists():
        pytest.skip("needs root and chattr to make a removal fail for real")
    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    engine = docker.from_env()
    label = [f"o16n.instance={settings.instance}", f"o16n.id={session_id}"]
    [container] = engine.containers.list(filters={"label": label})
    with _unremovable(container):
        resp = await client.delete(f"/sessions/{session_id}", headers=headers)
        assert resp.status == 200, await resp.text()  # closed; the container's removal waits
        assert engine.containers.list(all=True, filters={"label": label})
    deadline = time.monotonic() + 10
    while engine.containers.list(all=True, filters={"label": label}):
        assert time.monotonic() < deadline, "the failed removal was not tried again"
        await asyncio.sleep(0.2)
    await client.close()


async def test_a_warm_pool_whose_starts_fail_backs_off(
    aiohttp_client: Any, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        data_dir,
        runtime_image="o16n-runtime:missing-on-purpose",
        warm_pool_size=1,
        service_warm_pool_size=0,
    )
    caplog.set_level(logging.WARNING, logger="controller.runtime.warm_pool")
    client = await aiohttp_client(create_app(settings))
    await asyncio.sleep(6.5)
    attempts = [r for r in caplog.records if r.getMessage().startswith("warm pool could not")]
    # 0, 1, 3 s (then 7): three, where a retry twice a second would make thirteen
    assert 2 <= len(attempts) <= 3, len(attempts)
    await client.close()


async def test_the_sweep_removes_unused_containers_and_keeps_those_in_use(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """A container of this instance that nothing uses (the engine finished creating it
    after the controller gave up) goes; sessions' and warm containers stay."""
    from controller.runtime.sandboxes import SANDBOXES

    settings = make_settings(data_dir, warm_pool_size=1, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    engine = docker.from_env()
    label = f"o16n.instance={settings.instance}"
    deadline = time.monotonic() + 30
    while len(engine.containers.list(filters={"label": [label, "o16n.kind=warm"]})) < 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    in_use = {c.id for c in engine.containers.list(all=True, filters={"label": label})}
    stray = engine.containers.create(
        settings.runtime_image or _runtime_tag(),
        labels={"o16n.instance": settings.instance, "o16n.key": "abcdef012345"},
        network_disabled=True,
    )

    assert await client.app[SANDBOXES].sweep() == 1
    left = {c.id for c in engine.containers.list(all=True, filters={"label": label})}
    assert left == in_use and stray.id not in left
    assert (await execute(client, headers, session_id, "1"))["success"]
    await client.close()


async def test_the_sweep_keeps_the_socket_directory_of_a_sandbox_launched_meanwhile(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The sweep's file work waits for a free thread (other file work holds them all): a
    sandbox launched meanwhile keeps its socket directory, which its agent dials."""
    from controller.runtime.sandboxes import SANDBOXES

    settings = make_settings(data_dir, warm_pool_size=0, service_warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    sandboxes = client.app[SANDBOXES]
    loop = asyncio.get_running_loop()
    busy = [loop.run_in_executor(None, time.sleep, 0.5) for _ in range(64)]
    sweep = asyncio.ensure_future(sandboxes.sweep())
    await asyncio.sleep(0.3)  # the sweep has listed the containers and waits for a thread
    sandbox = await sandboxes.launch("probe", ident="sweep-race")
    await asyncio.gather(sweep, *busy)
    assert (settings.sockets_dir / sandbox.key).is_dir()
    await sandboxes.destroy(sandbox)
    await client.close()


def _runtime_tag() -> str:
    from controller.runtime.docker.image import default_tag

    return default_tag()
