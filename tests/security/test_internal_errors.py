"""A 500 says only "internal error" and a request id; the log line with the detail has the id."""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.errors import RuntimeFailure
from controller.http.public import public
from controller.settings import Settings
from tests.sessions.conftest import new_session

SECRET_PATH = "/opt/o16n/secret_module.py"
AGENT_TRACEBACK = f'Traceback (most recent call last):\n  File "{SECRET_PATH}", line 7\nKeyError'


@public
async def _crash(request: web.Request) -> web.Response:
    raise ValueError(f"bug near {SECRET_PATH}")


@public
async def _agent_failure(request: web.Request) -> web.Response:
    raise RuntimeFailure(AGENT_TRACEBACK)  # what _agent_error makes of an agent's error text


@public
async def _bug_while_out_of_space(request: web.Request) -> web.Response:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        return web.json_response({}["missing"])  # a bug in the handling of a full disk


@public
async def _table_locked_by_own_statement(request: web.Request) -> web.Response:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    cursor = conn.execute("SELECT x FROM t")
    cursor.fetchone()
    conn.execute("DROP TABLE t")  # SQLITE_LOCKED: a bug of ours, not a busy database
    return web.json_response({})


@pytest.fixture
async def crash_client(aiohttp_client: Any, settings: Settings) -> TestClient[Any, Any]:
    app = create_app(settings)
    app.router.add_get("/test/crash", _crash)
    app.router.add_get("/test/agent-failure", _agent_failure)
    app.router.add_get("/test/bug-while-out-of-space", _bug_while_out_of_space)
    app.router.add_get("/test/table-locked", _table_locked_by_own_statement)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    return client


def _assert_generic_500(body: dict[str, Any], request_id: str, exception_type: str) -> None:
    assert body["message"] == f"internal error (request id {request_id})"
    assert body["exceptionType"] == exception_type
    text = repr(body)
    assert SECRET_PATH not in text and "Traceback" not in text


async def test_a_crash_is_a_bare_500_with_the_logged_request_id(
    crash_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        resp = await crash_client.get("/test/crash")
    assert resp.status == 500
    request_id = resp.headers["X-Request-Id"]
    _assert_generic_500(await resp.json(), request_id, "InternalError")
    logged = [r for r in caplog.records if getattr(r, "requestId", None) == request_id]
    assert logged and logged[0].exc_info is not None  # the detail is in the log, not the reply
    assert SECRET_PATH in str(logged[0].exc_info[1])


async def test_a_bug_raised_while_handling_a_full_disk_is_a_500_not_a_507(
    crash_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Only a full disk itself (or an error raised *from* one) is 507: a bug that happens to
    run while an ENOSPC is being handled is a 500 whose traceback is logged."""
    with caplog.at_level(logging.INFO):
        resp = await crash_client.get("/test/bug-while-out-of-space")
    assert resp.status == 500
    request_id = resp.headers["X-Request-Id"]
    _assert_generic_500(await resp.json(), request_id, "InternalError")
    logged = [r for r in caplog.records if getattr(r, "requestId", None) == request_id]
    assert logged and logged[0].exc_info is not None
    assert isinstance(logged[0].exc_info[1], KeyError)


async def test_a_table_our_own_statement_locks_is_a_500_not_a_503(
    crash_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """SQLITE_LOCKED comes from a conflict inside one connection (no shared cache here):
    our bug, never another process's lock, so not a 503 telling the client to retry."""
    with caplog.at_level(logging.INFO):
        resp = await crash_client.get("/test/table-locked")
    assert resp.status == 500
    _assert_generic_500(await resp.json(), resp.headers["X-Request-Id"], "InternalError")


async def test_an_agent_failure_does_not_reach_the_client(
    crash_client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    resp = await crash_client.get("/test/agent-failure", headers={"X-Request-Id": "req-42.a_b"})
    assert resp.status == 500
    assert resp.headers["X-Request-Id"] == "req-42.a_b"  # a well-formed id is the client's
    _assert_generic_500(await resp.json(), "req-42.a_b", "RuntimeFailure")
    logged = [r for r in caplog.records if getattr(r, "requestId", None) == "req-42.a_b"]
    assert logged and SECRET_PATH in logged[0].error


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "semi;colon", "é"])
async def test_malformed_request_ids_are_replaced(
    crash_client: TestClient[Any, Any], given: str
) -> None:
    resp = await crash_client.get("/status", headers={"X-Request-Id": given} if given else {})
    request_id = resp.headers["X-Request-Id"]
    assert request_id != given and 1 <= len(request_id) <= 128


async def test_every_log_line_of_a_request_carries_its_id(
    crash_client: TestClient[Any, Any],
) -> None:
    from controller.logs import REQUEST_ID, JsonFormatter, TextFormatter

    token = REQUEST_ID.set("abc.123")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        assert json.loads(JsonFormatter().format(record))["requestId"] == "abc.123"
        assert "requestId=abc.123" in TextFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)


async def test_nul_code_never_answers_with_a_traceback(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A real internal failure path: the agent fails to compile code holding a NUL byte.
    Either the user's own result (success: false), or a bare 500: never the agent's text."""
    session_id = await new_session(client, admin_headers)
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": "\x00"}, headers=admin_headers
    )
    body = await resp.json()
    if resp.status == 500:
        _assert_generic_500(body, resp.headers["X-Request-Id"], body["exceptionType"])
    else:
        assert resp.status in (200, 400), body
    text = repr(body)
    assert "Traceback" not in text and "o16n_agent" not in text and ".py" not in text
