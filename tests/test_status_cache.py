"""``GET /status`` reuses its checks for ``O16N_STATUS_CACHE_SECONDS``: within that time an
answer is reused, after it the checks run again, a failure shows within the bound, and
requests that find the checks stale share one run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.settings import SETTINGS
from controller.status import CHECKS
from tests.conftest import bearer, login, make_settings, write_lock_held


async def _status_client(
    aiohttp_client: Any, data_dir: Path, cache_seconds: float
) -> tuple[TestClient[Any, Any], dict[str, str]]:
    settings = make_settings(data_dir, status_cache_seconds=cache_seconds)
    client = await aiohttp_client(create_app(settings))
    return client, bearer((await login(client))["access_token"])


async def _status(client: TestClient[Any, Any], headers: dict[str, str]) -> dict[str, Any]:
    resp = await client.get("/status", headers=headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_status_says_when_it_checked_and_reuses_that_within_the_lifetime(
    aiohttp_client: Any, data_dir: Path
) -> None:
    client, headers = await _status_client(aiohttp_client, data_dir, 60.0)
    first = await _status(client, headers)
    second = await _status(client, headers)
    assert first["details"]["maxAgeSeconds"] == 60.0
    assert first["details"]["checkedAt"] == second["details"]["checkedAt"]
    assert first["components"] == second["components"]
    assert client.app[CHECKS].runs == 1


async def test_status_checks_again_once_its_answer_is_older_than_the_lifetime(
    aiohttp_client: Any, data_dir: Path
) -> None:
    client, headers = await _status_client(aiohttp_client, data_dir, 0.2)
    first = await _status(client, headers)
    await asyncio.sleep(0.25)
    second = await _status(client, headers)
    assert second["details"]["checkedAt"] > first["details"]["checkedAt"]
    assert client.app[CHECKS].runs == 2


async def test_a_locked_database_fails_the_status_within_the_lifetime(
    aiohttp_client: Any, data_dir: Path
) -> None:
    client, headers = await _status_client(aiohttp_client, data_dir, 0.5)
    assert (await _status(client, headers))["components"]["database"]["statusCode"] == "pass"
    with write_lock_held(client.app[SETTINGS]):
        await asyncio.sleep(0.5)  # the answer given before the lock is now too old to reuse
        body = await _status(client, headers)
    assert body["statusCode"] == "fail"
    assert body["components"]["database"]["statusCode"] == "fail"


async def test_concurrent_requests_share_one_check(aiohttp_client: Any, data_dir: Path) -> None:
    """Sixteen requests at once, none cached yet, and a check slowed by a locked database
    (its ping waits for the lock until it gives up): one check answers them all."""
    client, headers = await _status_client(aiohttp_client, data_dir, 60.0)
    with write_lock_held(client.app[SETTINGS]):
        bodies = await asyncio.gather(*(_status(client, headers) for _ in range(16)))
    assert client.app[CHECKS].runs == 1
    assert len({body["details"]["checkedAt"] for body in bodies}) == 1
    assert all(body["components"]["database"]["statusCode"] == "fail" for body in bodies)


async def test_draining_shows_at_once_and_goes_at_once_within_the_lifetime(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The drain state is the node's own: it is read at each request, never reused."""
    client, headers = await _status_client(aiohttp_client, data_dir, 60.0)
    assert "drain" not in (await _status(client, headers))["components"]
    resp = await client.post("/admin/node/drain", json={"reason": "patching"}, headers=headers)
    assert resp.status == 200, await resp.text()
    drained = await _status(client, headers)
    assert drained["statusCode"] == "warn"
    assert drained["components"]["drain"]["details"]["reason"] == "patching"
    assert (await client.post("/admin/node/undrain", headers=headers)).status == 200
    undrained = await _status(client, headers)
    assert "drain" not in undrained["components"]
    assert len({b["details"]["checkedAt"] for b in (drained, undrained)}) == 1
    assert client.app[CHECKS].runs == 1
