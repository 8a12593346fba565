"""``/admin/sessions``: everyone's sessions, their state and resource use; closing any of
them even while code runs (its owner then gets 410); interrupting; the list stays fast with
hundreds of sessions."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.auth.passwords import hash_password
from controller.runtime.docker import stats
from controller.runtime.docker.gateway import DockerGateway
from controller.settings import Settings
from controller.store.db import open_database
from tests.admin.conftest import audit_entries
from tests.conftest import bearer, login, make_settings, user_headers
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


async def _wait_state(
    client: TestClient[Any, Any], headers: dict[str, str], session_id: str, state: str
) -> dict[str, Any]:
    for _ in range(100):
        resp = await client.get(f"/admin/sessions/{session_id}", headers=headers)
        body: dict[str, Any] = await resp.json()
        if body["state"] == state:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"session {session_id} never became {state}: {body}")


async def test_admin_closes_a_session_while_code_runs(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    owner = await user_headers(client, "nina")
    session_id = await new_session(client, owner, name="work")
    running = asyncio.create_task(
        execute(client, owner, session_id, "import time\ntime.sleep(120)")
    )
    await _wait_state(client, admin_headers, session_id, "busy")

    resp = await client.get("/admin/sessions?stats=true", headers=admin_headers)
    listed = {s["id"]: s for s in await resp.json()}
    item = listed[session_id]
    assert (item["owner"], item["name"], item["state"]) == ("nina", "work", "busy")
    assert item["created"].endswith("Z") and item["containerId"]
    assert item["computeNode"] == "local"
    assert item["stats"]["memoryBytes"] > 1_000_000 and item["stats"]["cpuSeconds"] >= 0

    started = time.monotonic()
    resp = await client.delete(f"/admin/sessions/{session_id}", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "dead"
    result = await asyncio.wait_for(running, 30)
    assert time.monotonic() - started < 15  # not the two minutes the code wanted
    assert result["success"] is False

    resp = await client.post(f"/sessions/{session_id}/execute", json={"code": "1"}, headers=owner)
    assert resp.status == 410
    assert "closed by an administrator" in (await resp.json())["message"]
    resp = await client.get("/admin/sessions?state=dead", headers=admin_headers)
    dead = {s["id"]: s for s in await resp.json()}
    assert dead[session_id]["deadReason"] == "closed by an administrator"

    closes = await audit_entries(client, action="session.close.admin")
    assert [(e.actor, e.target, e.outcome) for e in closes] == [("admin", session_id, "ok")]
    created = await audit_entries(client, action="session.create")
    assert [(e.actor, e.target) for e in created] == [("nina", session_id)]


async def test_admin_interrupts_any_session(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    owner = await user_headers(client, "omar")
    session_id = await new_session(client, owner)
    resp = await client.post(f"/admin/sessions/{session_id}/cancel", headers=admin_headers)
    assert await resp.json() == {"interrupted": False}
    running = asyncio.create_task(
        execute(client, owner, session_id, "import time\ntime.sleep(120)")
    )
    await _wait_state(client, admin_headers, session_id, "busy")
    resp = await client.post(f"/admin/sessions/{session_id}/cancel", headers=admin_headers)
    assert await resp.json() == {"interrupted": True}
    result = await asyncio.wait_for(running, 30)
    assert result["success"] is False and "cancelled" in result["errorMessage"]
    await _wait_state(client, admin_headers, session_id, "idle")
    assert (await execute(client, owner, session_id, "print(5)"))["consoleOutput"] == "5\n"

    for method, path in (("DELETE", "/admin/sessions/nope"), ("POST", "/admin/sessions/x/cancel")):
        resp = await client.request(method, path, headers=admin_headers)
        assert resp.status in (400, 404)
    resp = await client.get("/admin/sessions?state=sleepy", headers=admin_headers)
    assert resp.status == 400 and "state" in (await resp.json())["message"]


@pytest.fixture
def settings(data_dir: Any) -> Settings:
    return make_settings(data_dir, warm_pool_size=0)


async def test_the_list_stays_fast_with_500_sessions(
    aiohttp_client: Any, settings: Settings
) -> None:
    """500 sessions in the database (dead ones, loaded at start like any), p50 of the list."""
    db = await open_database(settings)
    now = time.time()
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO users (username, password_hash, role, created_at, updated_at)"
            " VALUES ('many', ?, 'Owner', ?, ?)",
            (hash_password("password-123"), now, now),
        )
        await conn.executemany(
            "INSERT INTO sessions (id, name, owner_id, runtime, container_key, container_id,"
            " state, dead_reason, created_at, last_used_at)"
            " VALUES (?, ?, (SELECT id FROM users WHERE username = 'many'), 'Python', ?, ?,"
            " 'dead', 'test', ?, ?)",
            [
                (str(uuid.uuid4()), f"s{i}", f"{i:012x}", f"{i:064x}", now - i, now)
                for i in range(500)
            ],
        )
    await db.close()
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client, "many", "password-123"))["access_token"])
    timings = []
    for _ in range(40):
        started = time.perf_counter()
        resp = await client.get("/admin/sessions", headers=headers)
        assert resp.status == 200
        assert len(await resp.json()) == 500
        timings.append(time.perf_counter() - started)
    p50 = statistics.median(timings)
    print(f"GET /admin/sessions with 500 sessions: p50 {p50 * 1000:.1f} ms")
    assert p50 < 0.25


async def test_stats_calls_take_at_most_their_share_of_docker_threads_across_requests(
    client: TestClient[Any, Any],
) -> None:
    """Two operators listing with ``?stats=true`` at once still hold at most
    ``CONCURRENCY`` of the gateway's threads between them."""
    gateway = await DockerGateway.connect()
    real = gateway.container_stats
    running, most = 0, 0

    async def counted(container_id: str) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.2)  # an engine that takes its time
            return await real(container_id)
        finally:
            running -= 1

    gateway.container_stats = counted  # type: ignore[method-assign]
    sampler = stats.StatsSampler(gateway)  # the engine's one: every request shares it
    ids = [f"{i:064x}" for i in range(8)]  # no such containers: None each
    try:
        first, second = await asyncio.gather(sampler.sample(ids), sampler.sample(ids[::-1]))
    finally:
        await gateway.close()
    assert first == second == dict.fromkeys(ids)
    assert most == stats.CONCURRENCY


async def test_a_stats_call_that_timed_out_keeps_its_slot_until_the_engine_answers(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine call runs on in its thread after the caller gave up waiting: its slot
    is not handed to another call until it ends, so the bound holds for a slow engine."""
    monkeypatch.setattr(stats, "TIMEOUT", 0.1)
    gateway = await DockerGateway.connect()
    real = gateway.container_stats
    running, most = 0, 0
    threads: list[asyncio.Future[Any]] = []

    async def engine(container_id: str) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.5)  # slower than the timeout
            return await real(container_id)
        finally:
            running -= 1

    async def counted(container_id: str) -> dict[str, Any]:
        thread = asyncio.ensure_future(engine(container_id))  # goes on like a thread
        threads.append(thread)
        return await asyncio.shield(thread)

    gateway.container_stats = counted  # type: ignore[method-assign]
    ids = [f"{i:064x}" for i in range(8)]
    try:
        assert await stats.StatsSampler(gateway).sample(ids) == dict.fromkeys(ids)
        await asyncio.sleep(1.5)
        await asyncio.gather(*threads, return_exceptions=True)
    finally:
        await gateway.close()
    assert most <= stats.CONCURRENCY
