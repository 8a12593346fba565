"""Any controller of a group answers for any session: a request for one another controller
holds is passed on to it, and a controller that stops has its sessions taken over, with
their state, by one that goes on."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bench._server import free_port
from controller.app import create_app
from controller.sessions.manager import SESSIONS
from controller.settings import SETTINGS, Settings
from tests.conftest import bearer, login, make_settings
from tests.webnodes.test_shared_catalogue import eventually

Client = TestClient[Any, Any]


def member(data_dir: Path, database: str, **overrides: Any) -> Settings:
    port = free_port()
    return make_settings(
        data_dir,
        database_url=database,
        port=port,
        internal_url=f"http://127.0.0.1:{port}",
        lease_seconds=3,
        **overrides,
    )


async def start(aiohttp_client: Any, settings: Settings) -> Client:
    client: Client = await aiohttp_client(
        create_app(settings), server_kwargs={"port": settings.port}
    )
    return client


async def execute(client: Client, headers: dict[str, str], sid: str, code: str) -> Any:
    resp = await client.post(f"/sessions/{sid}/execute", json={"code": code}, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def session_with_x(client: Client, headers: dict[str, str]) -> str:
    """A new session on ``client``'s controller holding ``x = 42``: its id."""
    resp = await client.post("/sessions", json={"name": "kept"}, headers=headers)
    assert resp.status == 201, await resp.text()
    sid: str = (await resp.json())["sessionId"]
    await execute(client, headers, sid, "x = 42")
    return sid


async def test_a_session_answers_through_every_controller_of_the_group(
    group_database: str, aiohttp_client: Any, data_dir: Path
) -> None:
    # their own data directories (sockets, agent bundles), one database, one JWT secret
    secret = "s" * 48
    a = await start(aiohttp_client, member(data_dir / "a", group_database, jwt_secret=secret))
    b = await start(aiohttp_client, member(data_dir / "b", group_database, jwt_secret=secret))
    headers = bearer((await login(a))["access_token"])
    resp = await a.post("/sessions", json={"name": "s"}, headers=headers)
    assert resp.status == 201, await resp.text()
    sid = (await resp.json())["sessionId"]
    await execute(a, headers, sid, "x = 42")

    # through the controller that does not hold it: passed on, state and all
    body = await execute(b, headers, sid, "print(x)")
    assert body["consoleOutput"] == "42\n"
    assert sid not in {s.id for s in b.app[SESSIONS].everyone()}  # never held twice
    resp = await b.get("/sessions", headers=headers)
    assert [s["id"] for s in await resp.json()] == [sid]
    resp = await b.get(f"/sessions/{sid}/history", headers=headers)
    assert await resp.json() == ["x = 42", "print(x)"]
    resp = await b.get(f"/sessions/{sid}/workspace", headers=headers)
    assert resp.status == 200, await resp.text()

    # a file up and down through it, streamed both ways (8 MiB: no hop holds it whole)
    payload = os.urandom(8 * 1024 * 1024)
    form = aiohttp.FormData()
    form.add_field("file", io.BytesIO(payload), filename="blob.bin")
    resp = await b.post(f"/sessions/{sid}/files", data=form, headers=headers)
    assert resp.status == 201, await resp.text()
    resp = await b.get(f"/sessions/{sid}/files/blob.bin", headers=headers)
    assert resp.status == 200 and await resp.read() == payload

    # another user's session is still a 404 there, passed on or not
    other = await b.post(
        "/admin/users", json={"name": "eve", "password": "password-123"}, headers=headers
    )
    assert other.status == 201, await other.text()
    eve = bearer((await login(b, "eve", "password-123"))["access_token"])
    resp = await b.post(f"/sessions/{sid}/execute", json={"code": "1"}, headers=eve)
    assert resp.status == 404, await resp.text()

    # a request another controller already passed on is never passed on again
    resp = await b.post(
        f"/sessions/{sid}/execute",
        json={"code": "1"},
        headers={**headers, "X-O16n-Forwarded-By": "someone"},
    )
    assert resp.status == 404, await resp.text()

    # an Owner's administration reaches it through either controller
    resp = await b.get("/admin/sessions", headers=headers)
    listed = {s["id"]: s for s in await resp.json()}
    assert listed[sid]["controller"] == a.app[SETTINGS].instance
    resp = await b.get(f"/admin/sessions/{sid}", headers=headers)
    assert (await resp.json())["historyLength"] == 2

    resp = await b.delete(f"/sessions/{sid}", headers=headers)
    assert resp.status == 200, await resp.text()
    for client in (a, b):
        resp = await client.post(f"/sessions/{sid}/execute", json={"code": "1"}, headers=headers)
        assert resp.status == 404, await resp.text()


async def test_the_session_limit_counts_the_sessions_on_every_controller(
    group_database: str, aiohttp_client: Any, data_dir: Path
) -> None:
    secret = "s" * 48
    a = await start(
        aiohttp_client,
        member(data_dir / "a", group_database, jwt_secret=secret, sessions_per_user=2),
    )
    b = await start(
        aiohttp_client,
        member(data_dir / "b", group_database, jwt_secret=secret, sessions_per_user=2),
    )
    headers = bearer((await login(a))["access_token"])
    for client in (a, b):
        resp = await client.post("/sessions", json={}, headers=headers)
        assert resp.status == 201, await resp.text()
    answers = await asyncio.gather(*(c.post("/sessions", json={}, headers=headers) for c in (a, b)))
    assert [r.status for r in answers] == [429, 429]


@pytest.mark.timeout(120)
async def test_a_stopped_controllers_sessions_are_taken_over_with_their_state(
    group_database: str, aiohttp_client: Any, data_dir: Path
) -> None:
    # one data directory: the fake engine's "containers" are processes found under it
    secret = "s" * 48
    a = await start(aiohttp_client, member(data_dir, group_database, jwt_secret=secret))
    b = await start(aiohttp_client, member(data_dir, group_database, jwt_secret=secret))
    headers = bearer((await login(a))["access_token"])
    sid = await session_with_x(a, headers)

    await a.close()  # its containers stay, as at any stop; its row goes with it
    stopped = time.monotonic()

    async def served() -> bool:
        resp = await b.post(f"/sessions/{sid}/execute", json={"code": "print(x)"}, headers=headers)
        if resp.status == 503:  # not taken over yet: try again, as told
            assert resp.headers["Retry-After"]
            return False
        assert resp.status == 200, await resp.text()
        return True

    await eventually(served, within=3 + 5)
    assert time.monotonic() - stopped < 3 + 5
    body = await execute(b, headers, sid, "print(x)")
    assert body["consoleOutput"] == "42\n"
    assert sid in {s.id for s in b.app[SESSIONS].everyone()}
    resp = await b.get(f"/sessions/{sid}/history", headers=headers)
    assert (await resp.json())[0] == "x = 42"


async def test_a_controller_starting_takes_over_at_once_what_a_stopped_one_left(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """Its first act, not a third of a lease later: the sessions of a controller that
    stopped (here: this data directory's, under another O16N_INSTANCE) are served at once."""
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    headers = bearer((await login(first))["access_token"])
    sid = await session_with_x(first, headers)
    await first.close()

    second = await aiohttp_client(create_app(make_settings(data_dir)))
    body = await execute(second, headers, sid, "print(x)")
    assert body["consoleOutput"] == "42\n"


async def test_a_session_taken_over_moves_again_with_its_container(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """Its container keeps the label of the controller that made it, however often the
    session moves: a rolling restart of the group (a stops, b takes over, b stops, c takes
    over) keeps it."""
    first = await aiohttp_client(create_app(make_settings(data_dir)))
    headers = bearer((await login(first))["access_token"])
    sid = await session_with_x(first, headers)
    await first.close()
    second = await aiohttp_client(create_app(make_settings(data_dir)))
    assert (await execute(second, headers, sid, "print(x)"))["consoleOutput"] == "42\n"
    await second.close()
    third = await aiohttp_client(create_app(make_settings(data_dir)))
    assert (await execute(third, headers, sid, "print(x)"))["consoleOutput"] == "42\n"


@pytest.mark.timeout(120)
async def test_a_clean_stop_slower_than_the_lease_keeps_its_sessions(
    group_database: str, aiohttp_client: Any, data_dir: Path
) -> None:
    """A controller stopping heartbeats until it has let go of its sessions: another does
    not take one over while the stopping one still links to it (which left the session
    busy until its execution limit)."""
    secret = "s" * 48
    a = await start(aiohttp_client, member(data_dir, group_database, jwt_secret=secret))
    b = await start(aiohttp_client, member(data_dir, group_database, jwt_secret=secret))
    headers = bearer((await login(a))["access_token"])
    sid = await session_with_x(a, headers)
    manager = a.app[SESSIONS]
    detach = manager.detach

    async def slow_detach() -> None:  # a teardown of many containers (pools, services)
        await asyncio.sleep(5)  # longer than the lease (3 s)
        await detach()

    manager.detach = slow_detach  # type: ignore[method-assign]
    await a.close()

    async def served() -> bool:
        resp = await b.post(f"/sessions/{sid}/execute", json={"code": "print(x)"}, headers=headers)
        if resp.status in (503, 409):
            return False
        assert resp.status == 200, await resp.text()
        return True

    await eventually(served, within=10)


async def test_a_take_over_that_fails_half_way_hands_the_sessions_back(
    aiohttp_client: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine failing to list the containers once (or this controller stopping in the
    middle) must not end the sessions being taken over: they go back to the dead
    controller's name, and the next round takes them over."""
    from controller.errors import RuntimeFailure
    from controller.sessions.manager import SessionManager

    first = await aiohttp_client(create_app(make_settings(data_dir)))
    headers = bearer((await login(first))["access_token"])
    sid = await session_with_x(first, headers)
    await first.close()

    real = SessionManager._handles
    failures = 0

    async def flaky(self: SessionManager, records: Any, listed: Any, of: str) -> Any:
        nonlocal failures
        if failures == 0 and records:  # the take-over's, not the start's own adoption
            failures += 1
            raise RuntimeFailure("the engine did not answer")
        return await real(self, records, listed, of)

    monkeypatch.setattr(SessionManager, "_handles", flaky)
    second = await aiohttp_client(create_app(make_settings(data_dir, lease_seconds=3)))
    assert failures == 1  # the take-over at start failed

    async def served() -> bool:
        resp = await second.post(
            f"/sessions/{sid}/execute", json={"code": "print(x)"}, headers=headers
        )
        if resp.status in (404, 503):  # handed back: the next round (1 s) takes it over
            return False
        assert resp.status == 200, await resp.text()
        return True

    await eventually(served, within=10)
    assert (await execute(second, headers, sid, "print(x)"))["consoleOutput"] == "42\n"
