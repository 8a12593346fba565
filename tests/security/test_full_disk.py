"""A full data directory (issue 9 item 2): writes are 507 with a JSON body saying so,
``/status`` fails the disk at once, reads and consume go on, a failed snapshot leaves no
partial file, and everything works again once space is freed. The data directory is a
real, small tmpfs filled to the last byte, not a mock."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import ADMIN_PASSWORD, bearer, login, make_settings
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 48 MiB tmpfs as the data directory (a short path: agent sockets live under it);
    unmounted whatever the test did."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = Path(tempfile.mkdtemp(prefix="o16n-fs-", dir="/tmp"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], check=False)  # a container's bind
        with contextlib.suppress(OSError):
            path.rmdir()


@pytest.fixture
async def full_disk_client(
    aiohttp_client: Any, small_disk: Path
) -> AsyncIterator[TestClient[Any, Any]]:
    settings = make_settings(
        small_disk,
        disk_fail_bytes="1MiB",
        disk_warn_bytes="2MiB",
        warm_pool_size=1,
        service_warm_pool_size=0,
        # every /status checks afresh: this test is about what the disk check sees (how
        # long an answer is reused is tests/test_status_cache.py's)
        status_cache_seconds=0,
    )
    yield await aiohttp_client(create_app(settings))


def fill(path: Path) -> None:
    """Write ``path`` until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert os.statvfs(path.parent).f_bavail == 0


async def out_of_space(resp: Any) -> None:
    assert resp.status == 507, await resp.text()
    body = await resp.json()
    assert body["exceptionType"] == "InsufficientStorage"
    assert "out of storage space" in body["message"]


def leftovers(data_dir: Path) -> set[str]:
    return {
        str(p.relative_to(data_dir))
        for sub in ("snapshots", "services")
        if (data_dir / sub).exists()
        for p in (data_dir / sub).iterdir()
    }


# The database is in the full data directory only on SQLite: on PostgreSQL a login, which
# writes nothing else, rightly goes on.
@pytest.mark.sqlite_only
async def test_a_full_disk_is_507_reads_and_consume_go_on_and_it_recovers(
    full_disk_client: TestClient[Any, Any], small_disk: Path
) -> None:
    client = full_disk_client
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    await execute(client, headers, session_id, "x = 41\nopen('notes.txt', 'w').write('n')")
    resp = await client.post(f"/sessions/{session_id}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    snapshot_id = (await resp.json())["snapshotId"]
    await publish(
        client,
        headers,
        "Add",
        "1",
        code="y = x + 1",
        snapshotId=snapshot_id,
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    result = await consume(client, headers, "Add", "1", {"x": 1})
    assert result["outputParameters"] == {"y": 2}
    status = await (await client.get("/status", headers=headers)).json()
    assert status["components"]["disk"]["statusCode"] == "pass"
    files_before = leftovers(small_disk)

    filler = small_disk / "filler"
    fill(filler)
    try:
        # /status says so at once (its checks are not reused here)
        status = await (await client.get("/status", headers=headers)).json()
        assert status["components"]["disk"]["statusCode"] == "fail"
        assert status["statusCode"] == "fail"

        # every write is 507 with a JSON body, none a 500
        await out_of_space(
            await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        )
        await out_of_space(
            await client.post("/sessions", json={"runtimeType": "Python"}, headers=headers)
        )
        await out_of_space(
            await client.post(f"/sessions/{session_id}/snapshot", json={}, headers=headers)
        )
        for body in ({}, {"snapshotId": snapshot_id}):
            await out_of_space(
                await client.post(
                    "/services/Other/1", json={"code": "z = 1", **body}, headers=headers
                )
            )
        assert leftovers(small_disk) == files_before  # no partial snapshot, no stray copy

        # reads and consume go on
        assert (await consume(client, headers, "Add", "1", {"x": 5}))["outputParameters"] == {
            "y": 6
        }
        assert (await client.get("/sessions", headers=headers)).status == 200
        assert (await client.get("/snapshots", headers=headers)).status == 200
        assert (await client.get(f"/snapshots/{snapshot_id}", headers=headers)).status == 200
        assert (await client.get("/services", headers=headers)).status == 200
        await execute(client, headers, session_id, "x += 1")
        resp = await client.get(f"/sessions/{session_id}/history", headers=headers)
        assert resp.status == 200, await resp.text()
        assert "x += 1" in str(await resp.json())  # stored plus what waits to be written
    finally:
        filler.unlink()

    # space freed: everything works again
    headers = bearer((await login(client))["access_token"])
    status = await (await client.get("/status", headers=headers)).json()
    assert status["components"]["disk"]["statusCode"] == "pass"
    resp = await client.post(f"/sessions/{session_id}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    await publish(client, headers, "Other", "1", code="z = 1")
    second = await new_session(client, headers)
    assert (await execute(client, headers, second, "w = 1"))["success"]


async def test_an_engine_out_of_space_is_507_too() -> None:
    """Docker's root often shares the data directory's disk: a commit or a container start
    the engine refuses with ENOSPC is the same 507, not a 500 "the engine refused"."""
    import docker.errors

    from controller.errors import InsufficientStorage
    from controller.runtime.docker.gateway import DockerGateway

    def refused() -> None:  # what docker-py raises for the engine's 500 on a full disk
        raise docker.errors.APIError(
            "500 Server Error",
            explanation="write /var/lib/docker/overlay2/x/diff/f: no space left on device",
        )

    gateway = await DockerGateway.connect(1, 1)
    try:
        with pytest.raises(InsufficientStorage):
            await gateway._run(refused)
    finally:
        await gateway.close()
