"""``Server-Timing`` on consume, execute and session create (issue 13): W3C syntax, the
phase names ``o16n admin capacity`` reads, and phases that add up to no more than the total.
Real containers: the phases are measured where the work is done."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.timing import PHASES
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import publish
from tests.sessions.conftest import new_session

pytestmark = pytest.mark.docker

#: one ``name;dur=1.234;desc="..."`` entry of the W3C Server-Timing syntax
_ENTRY = re.compile(r'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)((?:;[A-Za-z]+=(?:"[^"]*"|[^,;"\s]+))*)')
_PARAM = re.compile(r';([A-Za-z]+)=("[^"]*"|[^,;"\s]+)')


def parse(header: str) -> dict[str, float]:
    """The durations (ms) of a ``Server-Timing`` value, by metric name; strict enough that
    anything not in the W3C grammar fails the test."""
    durations: dict[str, float] = {}
    for part in header.split(","):
        match = _ENTRY.fullmatch(part.strip())
        assert match, f"not a Server-Timing entry: {part!r}"
        params = dict(_PARAM.findall(match.group(2)))
        assert set(params) <= {"dur", "desc"}, part
        assert re.fullmatch(r"\d+(\.\d{1,3})?", params["dur"]), part
        assert match.group(1) not in durations, f"{match.group(1)} twice"
        durations[match.group(1)] = float(params["dur"])
    return durations


def check(header: str | None, *expected: str) -> dict[str, float]:
    assert header is not None, "no Server-Timing header"
    durations = parse(header)
    assert list(durations)[-1] == "total"
    phases = {k: v for k, v in durations.items() if k != "total"}
    assert set(phases) <= set(PHASES), header
    assert set(expected) <= set(phases), header
    assert sum(phases.values()) <= durations["total"], header
    return durations


async def test_consume_success_and_user_failure(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish(
        client,
        admin_headers,
        "Timed",
        "1",
        code="import time\nif x < 0:\n    raise ValueError('negative')\ntime.sleep(x / 10)\ny = x",
        inputParameterDefinitions=[{"name": "x", "type": "numeric"}],
        outputParameterDefinitions=[{"name": "y", "type": "numeric"}],
    )
    for x, success in ((0, True), (-1, False)):
        resp = await client.post("/api/Timed/1", json={"x": x}, headers=admin_headers)
        assert resp.status == 200
        assert (await resp.json())["success"] is success
        durations = check(resp.headers.get("Server-Timing"), "auth", "exec", "encode")
        assert {"queue", "acquire"} & set(durations), durations
        assert "restore" not in durations
    # an error response of a timed route carries it too, with the phases it went through
    resp = await client.post("/api/Timed/1", json={"x": "two"}, headers=admin_headers)
    assert resp.status == 400
    durations = check(resp.headers.get("Server-Timing"), "auth")
    assert "exec" not in durations
    # with one container, a second request waits in the queue for the first one's
    resp = await client.post(
        "/services/Timed/1/pool",
        json={"InitialPoolSize": 1, "MaxPoolSize": 1},
        headers=admin_headers,
    )
    assert resp.status == 200, await resp.text()
    first, second = await asyncio.gather(
        *(client.post("/api/Timed/1", json={"x": 3}, headers=admin_headers) for _ in range(2))
    )
    assert first.status == second.status == 200
    waits = sorted(
        check(r.headers.get("Server-Timing"), "exec").get("queue", 0.0) for r in (first, second)
    )
    assert waits[1] >= 200, waits  # the other's 0.3 s run, less what it had done before
    # a refused token's 401: the time the refusal took
    resp = await client.post("/api/Timed/1", json={"x": 0}, headers=bearer("not-a-token"))
    assert resp.status == 401
    assert set(check(resp.headers.get("Server-Timing"), "auth")) == {"auth", "total"}
    # other routes are not timed
    resp = await client.get("/api/Timed/1/swagger.json", headers=admin_headers)
    assert "Server-Timing" not in resp.headers


async def test_session_create_and_execute(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/sessions", json={"runtimeType": "Python"}, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    durations = check(resp.headers.get("Server-Timing"), "auth", "acquire")
    assert not {"exec", "restore", "queue"} & set(durations), durations
    session_id = (await resp.json())["sessionId"]
    for code, success in (("x = 1", True), ("1 / 0", False)):
        resp = await client.post(
            f"/sessions/{session_id}/execute", json={"code": code}, headers=admin_headers
        )
        assert resp.status == 200
        assert (await resp.json())["success"] is success
        durations = check(resp.headers.get("Server-Timing"), "auth", "exec", "encode")
        assert not {"acquire", "queue", "restore"} & set(durations), durations


async def test_session_from_a_snapshot_restores(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    first = await new_session(client, admin_headers)
    resp = await client.post(
        f"/sessions/{first}/execute", json={"code": "x = 41"}, headers=admin_headers
    )
    assert resp.status == 200
    resp = await client.post(f"/sessions/{first}/snapshot", json={}, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    snapshot_id = (await resp.json())["snapshotId"]
    resp = await client.post("/sessions", json={"snapshotId": snapshot_id}, headers=admin_headers)
    assert resp.status == 201, await resp.text()
    durations = check(resp.headers.get("Server-Timing"), "auth", "acquire", "restore")
    assert durations["restore"] > 0, durations


async def test_off_sends_no_header(aiohttp_client: Any, data_dir: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, server_timing="off")))
    headers = bearer((await login(client))["access_token"])
    session_id = await new_session(client, headers)
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": "x = 1"}, headers=headers
    )
    assert resp.status == 200
    assert "Server-Timing" not in resp.headers
