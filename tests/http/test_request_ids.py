"""Request ids (issue 13): ``X-Request-Id`` taken from the client when well-formed, else
made; echoed on every response, errors and streamed ones included; given as ``requestId``
in every error body; carried by the log lines of the request and of the tasks it starts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from o16n_agent import protocol

from controller.app import create_app
from controller.errors import AgentProtocolError
from controller.http.middlewares import new_request_id
from controller.http.request_id import REQUEST_ID
from controller.runtime.agent_link import AgentLink, AgentListener
from controller.tasks import TASKS
from tests.conftest import bearer, login, make_settings, user_headers
from tests.http.log_lines import JsonLines, json_lines
from tests.sessions.conftest import new_session

ID = "X-Request-Id"


async def error_of(resp: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """The error body of ``resp``, checked: the status, and the id of the header."""
    assert resp.status == status, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert body["exceptionType"], body
    assert body["requestId"] == resp.headers[ID], (body, resp.headers)
    return body


async def test_every_kind_of_error_carries_the_request_id(
    aiohttp_client: Any, data_dir: Path
) -> None:
    client = await aiohttp_client(
        create_app(make_settings(data_dir, max_body_bytes=1024, login_max_failures=1))
    )
    admin = bearer((await login(client))["access_token"])
    # before routing: no route (404), a wrong method (405)
    await error_of(await client.get("/no/such/route"), 404)
    await error_of(await client.get("/login"), 405)
    # the body limits (413) and the auth middleware (401) run before the handler
    big = b"{" + b" " * 4096 + b"}"
    await error_of(await client.post("/services/x", data=big, headers=admin), 413)
    await error_of(await client.get("/sessions"), 401)
    await error_of(await client.get("/sessions", headers=bearer("not-a-token")), 401)
    # handlers: a bad body (400), a role (403), a quota (429), a draining node (503)
    await error_of(await client.post("/sessions", data=b"{", headers=admin), 400)
    reader = await user_headers(client, "rita", "Reader")
    await error_of(await client.post("/services/x/1", json={"code": "y=1"}, headers=reader), 403)
    for status in (401, 429):  # a login throttled after a failure
        bad = {"username": "admin", "password": "wrong"}
        await error_of(await client.post("/login", json=bad), status)
    resp = await client.post("/admin/node/drain", json={}, headers=admin)
    assert resp.status == 200, await resp.text()
    body = await error_of(await client.post("/sessions", json={}, headers=admin), 503)
    assert "draining" in body["message"]
    # an Expect the controller does not know: refused before any middleware runs
    resp = await client.post(
        "/login", data=b"{}", headers={"Expect": "something-else", ID: "from-the-proxy"}
    )
    body = await error_of(resp, 417)
    assert body["requestId"] == "from-the-proxy"
    for path in ("/sessions", "/api/Some/1"):  # every route, not only the anonymous ones
        resp = await client.post(path, data=b"{}", headers={**admin, "Expect": "other"})
        await error_of(resp, 417)
    resp = await client.post("/api/Some/1", json={}, headers=admin, expect100=True)
    await error_of(resp, 404)  # 100-continue: invited, and answered as without it


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123_X.y", True),
        ("a" * 128, True),
        ("a" * 129, False),  # oversized
        ("has space", False),
        ("<script>", False),
        ("", False),
    ],
)
async def test_a_well_formed_client_id_is_kept_else_replaced(
    client: TestClient[Any, Any], admin_headers: dict[str, str], given: str, kept: bool
) -> None:
    resp = await client.get("/no/such/route", headers={ID: given})
    body = await error_of(resp, 404)
    assert (body["requestId"] == given) is kept
    assert len(body["requestId"]) <= 128
    resp = await client.get("/status", headers={**admin_headers, ID: given})
    assert resp.status == 200
    assert (resp.headers[ID] == given) is kept


async def test_streamed_responses_carry_the_request_id(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    form = aiohttp.FormData()
    form.add_field("file", b"1,2,3", filename="data.csv")
    resp = await client.post(f"/sessions/{session_id}/files", data=form, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    resp = await client.get(
        f"/sessions/{session_id}/files/data.csv", headers={**admin_headers, ID: "stream-1"}
    )
    assert resp.status == 200
    assert await resp.read() == b"1,2,3"
    assert resp.headers[ID] == "stream-1"


@pytest.fixture
def lines() -> Iterator[JsonLines]:
    with json_lines() as caught:
        yield caught


async def test_log_lines_of_the_request_and_its_tasks_carry_its_id(
    aiohttp_client: Any, data_dir: Path, lines: JsonLines
) -> None:
    log = logging.getLogger("tests.request_ids")
    app = create_app(make_settings(data_dir))
    done = asyncio.Event()

    async def later() -> None:
        await asyncio.sleep(0.01)
        log.info("background line")
        done.set()

    async def handler(request: web.Request) -> web.Response:
        log.info("handler line")
        request.app[TASKS].spawn("later", later())
        return web.Response(text="ok")

    app.router.add_get("/probe-log", handler)
    client = await aiohttp_client(app)
    admin = bearer((await login(client))["access_token"])
    resp = await client.get("/probe-log", headers={**admin, ID: "log-me-1"})
    assert resp.status == 200
    await asyncio.wait_for(done.wait(), 5)
    ours = {line["msg"]: line for line in lines.lines if line["logger"] == "tests.request_ids"}
    assert ours["handler line"]["requestId"] == "log-me-1"
    assert ours["background line"]["requestId"] == "log-me-1"


async def test_the_agent_links_lines_carry_the_id_of_the_request_in_flight(
    tmp_path: Path, lines: JsonLines
) -> None:
    """A container's link outlives the request that started it (a session's create, a
    pool's first consume): a line its reader writes when the agent breaks the protocol
    carries the id of the request whose call was in flight, never the starter's; with no
    call in flight, no id at all."""

    async def started_by(request_id: str) -> tuple[AgentListener, AgentLink, socket.socket]:
        REQUEST_ID.set(request_id)  # this task's context, as a request's own task
        listener = AgentListener(tmp_path / request_id, 1 << 20, 1 << 20)
        await listener.start()
        agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.to_thread(agent.connect, str(listener.socket_path))
        hello = protocol.encode_head({"op": "hello", "version": protocol.VERSION})
        await asyncio.to_thread(agent.sendall, hello)
        return listener, await listener.wait_link(5), agent

    async def served_by(request_id: str, link: AgentLink) -> None:
        REQUEST_ID.set(request_id)
        with pytest.raises(AgentProtocolError):
            await link.call("execute", timeout=5)

    # a reply with the wrong id while request "exec-2" waits
    listener, link, agent = await asyncio.create_task(started_by("create-1"))
    try:
        call = asyncio.create_task(served_by("exec-2", link))
        await asyncio.to_thread(agent.recv, 4096)
        await asyncio.to_thread(agent.sendall, protocol.encode_head({"id": 99, "ok": True}))
        await call
    finally:
        agent.close()
        await listener.close()
    # a second dial-in (code in the container can connect), a frame when no request waits
    listener, link, agent = await asyncio.create_task(started_by("create-3"))
    intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await asyncio.to_thread(intruder.connect, str(listener.socket_path))
        await asyncio.to_thread(intruder.recv, 1)  # the listener hangs up on it
        await asyncio.to_thread(agent.sendall, protocol.encode_head({"id": 1, "ok": True}))
        await asyncio.wait_for(link._closed.wait(), 5)
    finally:
        intruder.close()
        agent.close()
        await listener.close()
    closed = [line for line in lines.lines if line["msg"] == "agent link closed"]
    assert len(closed) == 2, lines.lines
    assert closed[0]["requestId"] == "exec-2", closed[0]
    assert "requestId" not in closed[1], closed[1]
    [refused] = [line for line in lines.lines if line["msg"] == "agent connection refused"]
    assert "requestId" not in refused, refused


async def test_a_failed_requests_line_names_its_route_not_its_path(
    aiohttp_client: Any, data_dir: Path, lines: JsonLines
) -> None:
    """A path can hold a secret (``DELETE /login/refreshToken/{refreshToken}``): the lines
    of a request that failed name its route's template, as the access log does."""
    app = create_app(make_settings(data_dir))

    async def failing(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app.router.add_delete("/probe-fail/{secret}", failing)
    client = await aiohttp_client(app)
    admin = bearer((await login(client))["access_token"])
    resp = await client.delete("/probe-fail/s3cret-token", headers={**admin, ID: "fail-1"})
    assert resp.status == 500
    [line] = [line for line in lines.lines if line["msg"] == "unhandled error"]
    assert line["requestId"] == "fail-1"
    assert line["route"] == "/probe-fail/{secret}"
    assert "s3cret" not in json.dumps(line)


def test_made_ids_are_unique_well_formed_and_cost_no_random_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_random(*args: object) -> bytes:
        raise AssertionError("a request id read the random pool")

    monkeypatch.setattr(os, "urandom", no_random)
    made = [new_request_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in made)
    assert len({i[:8] for i in made}) == 1  # one process, one prefix
