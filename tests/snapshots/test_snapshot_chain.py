"""A snapshot of a session started from another snapshot keeps that snapshot's root
filesystem, even when the session changed nothing of it: a service published from it must
not fall back to the base environment (only with a writable root can a container change
it: ``O16N_CONTAINER_READ_ONLY=false``)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.app import create_app
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker

MARK = "/var/tmp/o16n-chain"  # in the container: a world-writable directory of its root


async def test_a_service_from_a_chained_snapshot_keeps_the_first_ones_files(
    aiohttp_client: Any, data_dir: Any
) -> None:
    settings = make_settings(
        data_dir, container_read_only=False, warm_pool_size=0, service_warm_pool_size=0
    )
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    first = await new_session(client, headers)
    wrote = await execute(client, headers, first, f"open({MARK!r}, 'w').write('x')")
    assert wrote["success"], wrote
    resp = await client.post(f"/sessions/{first}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    changed = (await resp.json())["snapshotId"]

    second = await new_session(client, headers, snapshotId=changed)  # changes nothing more
    resp = await client.post(f"/sessions/{second}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    chained = (await resp.json())["snapshotId"]

    await publish(
        client,
        headers,
        "Chain",
        "1",
        snapshotId=chained,
        code=f"import os\nthere = os.path.exists({MARK!r})",
        outputParameterDefinitions=[{"name": "there", "type": "logical"}],
    )
    result = await consume(client, headers, "Chain", "1", {})
    assert result["success"], result
    assert result["outputParameters"] == {"there": True}
