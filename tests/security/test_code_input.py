"""Code a client sends that cannot be compiled is the client's result (issue 8, item 8, the
agent's half): ``execute`` with ``"\\x00"`` answered 500 with the agent's traceback.

Every place user strings reach ``compile``: a session's code, a service's code and
initCode (compiled when a container warms up), and a batch (which runs the service)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.services.conftest import consume, publish
from tests.sessions.conftest import new_session

pytestmark = pytest.mark.docker

#: Code ``compile`` refuses with something other than a plain SyntaxError on 3.11
#: (ValueError for a NUL byte, MemoryError/RecursionError for parser depth), and plain ones.
UNCOMPILABLE = {
    "nul": ("\x00", "null bytes"),
    "nul after code": ("x = 1\n\x00", "null bytes"),
    "deep expression": ("-" * 200_000 + "1", "Error"),
    "deep brackets": ("[" * 100_000, "Error"),
    "syntax": ("def f(:\n", "SyntaxError"),
}
AGENT_INTERNALS = ("o16n_agent", "/opt/o16n", "site-packages", 'File "/')


def _clean(message: str) -> None:
    for marker in AGENT_INTERNALS:
        assert marker not in message, message


@pytest.mark.parametrize("case", sorted(UNCOMPILABLE))
async def test_execute_of_code_that_does_not_compile_is_a_result(
    client: TestClient[Any, Any], admin_headers: dict[str, str], case: str
) -> None:
    code, expected = UNCOMPILABLE[case]
    session_id = await new_session(client, admin_headers)
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": code}, headers=admin_headers
    )
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["success"] is False and expected in result["errorMessage"]
    _clean(result["errorMessage"])
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": "1 + 1"}, headers=admin_headers
    )
    assert (await resp.json())["consoleOutput"] == "2\n"


async def test_a_service_whose_code_or_init_code_does_not_compile_answers_why(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    x = [{"name": "x", "type": "integer"}]
    await publish(
        client, admin_headers, "NulCode", "1", code="y = 1\x00", inputParameterDefinitions=x
    )
    await publish(client, admin_headers, "NulInit", "1", code="y = 1", initCode="\x00")
    code = await consume(client, admin_headers, "NulCode", "1", {"x": 1})
    assert code["success"] is False and "does not compile" in code["errorMessage"]
    assert "null bytes" in code["errorMessage"]
    _clean(code["errorMessage"])
    init = await consume(client, admin_headers, "NulInit", "1", {})
    assert init["success"] is False and "initCode failed" in init["errorMessage"]
    assert "null bytes" in init["errorMessage"]
    _clean(init["errorMessage"])

    resp = await client.post(
        "/api/NulCode/1/batch", json=[{"x": 1}, {"x": 2}], headers=admin_headers
    )
    assert resp.status == 202, await resp.text()
    batch_id = (await resp.json())["batchExecutionId"]
    for _ in range(600):
        resp = await client.get(f"/api/NulCode/1/batch/{batch_id}", headers=admin_headers)
        status = await resp.json()
        if status["state"] in ("Complete", "Failed"):
            break
        await asyncio.sleep(0.1)
    assert status["state"] == "Complete", status
    results = status["batchExecutionResults"]
    assert len(results) == 2
    for result in results:
        assert result["success"] is False and "null bytes" in result["errorMessage"]
        _clean(result["errorMessage"])
