"""The sessions API end to end against real containers (API.md §8)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import dill
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import make_settings, user_headers
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def test_lifecycle_execute_and_history(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.post(
        "/sessions", json={"name": "Session 1", "runtimeType": "Python"}, headers=admin_headers
    )
    assert resp.status == 201
    session_id = (await resp.json())["sessionId"]
    assert GUID.match(session_id)

    listed = await (await client.get("/sessions", headers=admin_headers)).json()
    assert {
        "id": session_id,
        "name": "Session 1",
        "owner": "admin",
        "runtimeType": "Python",
    } in listed

    result = await execute(client, admin_headers, session_id, "import numpy as np\nx = 20")
    assert result == {
        "success": True,
        "errorMessage": "",
        "consoleOutput": "",
        "changedFiles": [],
        "outputParameters": [],
    }
    result = await execute(
        client,
        admin_headers,
        session_id,
        "print('hello', a, b)\nimport pandas as pd\n"
        "df = pd.DataFrame({'n': [1.5, float('nan')], 's': ['x', 'y']})\n"
        "arr = np.arange(3) * x\nscalar = np.float64(2.5)\nopen('out.csv', 'w').write('1,2')\n"
        "a * b",
        inputParameters=[{"name": "a", "value": 2}, {"name": "b", "value": [1, 2]}],
        outputParameters=["arr", "df", "scalar", "missing"],
    )
    assert result["success"] is True, result
    assert result["consoleOutput"] == "hello 2 [1, 2]\n[1, 2, 1, 2]\n"
    assert result["changedFiles"] == ["out.csv"]
    assert result["outputParameters"] == [
        {"name": "arr", "value": [0, 20, 40]},
        {"name": "df", "value": {"n": [1.5, None], "s": ["x", "y"]}},
        {"name": "scalar", "value": 2.5},
        {"name": "missing", "value": None},
    ]
    console = await (
        await client.get(f"/sessions/{session_id}/console-output", headers=admin_headers)
    ).json()
    assert console == {"consoleOutput": result["consoleOutput"]}
    history = await (
        await client.get(f"/sessions/{session_id}/history", headers=admin_headers)
    ).json()
    assert history[0] == "import numpy as np\nx = 20" and len(history) == 2

    resp = await client.delete(f"/sessions/{session_id}", headers=admin_headers)
    assert resp.status == 200
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": "1"}, headers=admin_headers
    )
    assert resp.status == 404


async def test_user_errors_are_results_not_http_errors(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    result = await execute(client, admin_headers, session_id, "def f(v):\n    return 1 / v\n")
    assert result["success"]
    result = await execute(client, admin_headers, session_id, "print('before')\nf(0)")
    assert result["success"] is False
    assert "ZeroDivisionError: division by zero" in result["errorMessage"]
    assert "return 1 / v" in result["errorMessage"]  # the user's own source line
    assert "o16n_agent" not in result["errorMessage"]  # no agent frames
    assert result["consoleOutput"] == "before\n"
    result = await execute(client, admin_headers, session_id, "def broken(:")
    assert result["success"] is False and "SyntaxError" in result["errorMessage"]
    result = await execute(client, admin_headers, session_id, "raise SystemExit(3)")
    assert result["success"] is False and "SystemExit" in result["errorMessage"]
    result = await execute(client, admin_headers, session_id, "z = 1j", outputParameters=["z"])
    assert result["success"] is False
    assert "'z'" in result["errorMessage"] and "complex" in result["errorMessage"]
    # the session is still fine
    result = await execute(client, admin_headers, session_id, "2 + 2")
    assert result["success"] and result["consoleOutput"] == "4\n"


async def test_console_output_is_capped(aiohttp_client: Any, data_dir: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, console_output_max=2048)))
    headers = await user_headers(client, "carol")
    session_id = await new_session(client, headers)
    result = await execute(client, headers, session_id, "print('x' * 10000)")
    assert result["success"]
    assert result["consoleOutput"].startswith("x" * 2048)
    assert "truncated: 7953 more characters" in result["consoleOutput"]


async def test_bad_requests_are_400s(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    resp = await client.post("/sessions", json={"runtimeType": "R"}, headers=admin_headers)
    assert resp.status == 400
    assert "Python" in (await resp.json())["message"]
    session_id = await new_session(client, admin_headers)
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"cod": "1"}, headers=admin_headers
    )
    assert resp.status == 400 and "'code'" in (await resp.json())["message"]
    resp = await client.post(
        f"/sessions/{session_id}/execute",
        json={"code": "1", "inputParameters": [{"name": "not valid", "value": 1}]},
        headers=admin_headers,
    )
    assert resp.status == 400 and "not valid" in (await resp.json())["message"]
    # snake_case keys (the SDK's ExecuteRequest model) are accepted
    result = await execute(
        client,
        admin_headers,
        session_id,
        "y = x * 2",
        input_parameters=[{"name": "x", "value": 4}],
        output_parameters=["y"],
    )
    assert result["outputParameters"] == [{"name": "y", "value": 8}]
    resp = await client.get("/sessions/not-a-guid/history", headers=admin_headers)
    assert resp.status == 404


async def test_sessions_are_private(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    other = await user_headers(client, "mallory")
    for method, path in [
        ("POST", f"/sessions/{session_id}/execute"),
        ("GET", f"/sessions/{session_id}/history"),
        ("GET", f"/sessions/{session_id}/files"),
        ("GET", f"/sessions/{session_id}/workspace"),
        ("DELETE", f"/sessions/{session_id}"),
        ("POST", f"/sessions/{session_id}/cancel"),
    ]:
        resp = await client.request(method, path, json={"code": "1"}, headers=other)
        assert resp.status == 404, (method, path)
    assert await (await client.get("/sessions", headers=other)).json() == []
    result = await execute(client, admin_headers, session_id, "1")
    assert result["success"]


async def test_files(client: TestClient[Any, Any], admin_headers: dict[str, str]) -> None:
    session_id = await new_session(client, admin_headers)
    form = aiohttp.FormData()
    form.add_field("file", b"a,b\n1,2\n", filename="data.csv", content_type="text/csv")
    resp = await client.post(f"/sessions/{session_id}/files", data=form, headers=admin_headers)
    assert resp.status == 201
    files = await (await client.get(f"/sessions/{session_id}/files", headers=admin_headers)).json()
    assert files == ["data.csv"]
    result = await execute(
        client,
        admin_headers,
        session_id,
        "import pandas as pd\nn = len(pd.read_csv('data.csv'))\nopen('r.txt','w').write(str(n))",
        outputParameters=["n"],
    )
    assert result["outputParameters"] == [{"name": "n", "value": 1}]
    resp = await client.get(f"/sessions/{session_id}/files/r.txt", headers=admin_headers)
    assert resp.status == 200 and await resp.read() == b"1"
    for bad in ("..", "a%2Fb", "%00x"):
        resp = await client.get(f"/sessions/{session_id}/files/{bad}", headers=admin_headers)
        assert resp.status in (400, 404), bad
    for bad in ("../escape.txt", "dir/name.txt", ".."):
        raw = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
            + bad.encode()
            + b'"\r\n\r\nx\r\n--b--\r\n'
        )
        resp = await client.post(
            f"/sessions/{session_id}/files",
            data=raw,
            headers={**admin_headers, "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert resp.status == 400, bad
        assert "not a valid file name" in (await resp.json())["message"]
    resp = await client.delete(f"/sessions/{session_id}/files/data.csv", headers=admin_headers)
    assert resp.status == 200
    resp = await client.get(f"/sessions/{session_id}/files/data.csv", headers=admin_headers)
    assert resp.status == 404
    files = await (await client.get(f"/sessions/{session_id}/files", headers=admin_headers)).json()
    assert files == ["r.txt"]
    await execute(client, admin_headers, session_id, "import os\nos.mkdir('d')\nos.mkfifo('p')")
    for special in ("d", "p"):  # a directory fails to read, a FIFO would block: both refused
        resp = await client.get(f"/sessions/{session_id}/files/{special}", headers=admin_headers)
        assert resp.status == 400, special
        assert "not a regular file" in (await resp.json())["message"], special


async def test_workspace_objects_travel_as_dill(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    headers = {**admin_headers, "Content-Type": "application/octet-stream"}
    payload = dill.dumps({"weights": np.array([1.0, 2.0]), "label": "m"})
    resp = await client.post(
        f"/sessions/{session_id}/workspace/model", data=payload, headers=headers
    )
    assert resp.status == 200
    result = await execute(
        client,
        admin_headers,
        session_id,
        "total = float(model['weights'].sum())",
        outputParameters=["total"],
    )
    assert result["outputParameters"] == [{"name": "total", "value": 3.0}]
    names = await (
        await client.get(f"/sessions/{session_id}/workspace", headers=admin_headers)
    ).json()
    assert names == ["model", "total"]
    resp = await client.get(f"/sessions/{session_id}/workspace/model", headers=admin_headers)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/octet-stream"
    value = dill.loads(await resp.read())
    assert value["label"] == "m" and value["weights"].tolist() == [1.0, 2.0]
    resp = await client.post(
        f"/sessions/{session_id}/workspace/bad", data=b"not a pickle", headers=headers
    )
    assert resp.status == 400 and "dill" in (await resp.json())["message"]
    resp = await client.post(
        f"/sessions/{session_id}/workspace/no-t-valid", data=payload, headers=headers
    )
    assert resp.status == 400
    resp = await client.delete(f"/sessions/{session_id}/workspace/model", headers=admin_headers)
    assert resp.status == 200
    resp = await client.get(f"/sessions/{session_id}/workspace/model", headers=admin_headers)
    assert resp.status == 404
    resp = await client.delete(f"/sessions/{session_id}/workspace/model", headers=admin_headers)
    assert resp.status == 404


async def test_one_execution_at_a_time_and_cancel(aiohttp_client: Any, data_dir: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, session_busy_wait=0.5)))
    headers = await user_headers(client, "dave")
    session_id = await new_session(client, headers)
    running = asyncio.ensure_future(
        execute(client, headers, session_id, "import time\nprint('started')\ntime.sleep(60)")
    )
    await asyncio.sleep(1.5)
    resp = await client.post(f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers)
    assert resp.status == 409
    assert "busy" in (await resp.json())["message"]
    resp = await client.post(f"/sessions/{session_id}/cancel", headers=headers)
    assert resp.status == 200
    result = await asyncio.wait_for(running, 20)
    assert result["success"] is False
    assert "cancelled" in result["errorMessage"]
    assert result["consoleOutput"] == "started\n"
    result = await execute(client, headers, session_id, "'still alive'")
    assert result["success"] and result["consoleOutput"] == "'still alive'\n"
    resp = await client.post(f"/sessions/{session_id}/cancel", headers=headers)
    assert await resp.json() == "Nothing was running."


async def test_time_limit_interrupts_the_execution(aiohttp_client: Any, data_dir: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, execute_timeout=2)))
    headers = await user_headers(client, "erin")
    session_id = await new_session(client, headers)
    result = await execute(client, headers, session_id, "while True:\n    pass")
    assert result["success"] is False
    assert "time limit of 2 s" in result["errorMessage"]
    assert (await execute(client, headers, session_id, "1"))["success"]


async def test_sessions_per_user_limit(aiohttp_client: Any, data_dir: Any) -> None:
    client = await aiohttp_client(create_app(make_settings(data_dir, sessions_per_user=2)))
    headers = await user_headers(client, "frank")
    first = await new_session(client, headers)
    await new_session(client, headers)
    resp = await client.post("/sessions", json={}, headers=headers)
    assert resp.status == 429
    assert "limit is 2" in (await resp.json())["message"]
    await client.delete(f"/sessions/{first}/force", headers=headers)
    await new_session(client, headers)


async def test_idle_sessions_are_closed(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Any
) -> None:
    import time

    import docker

    from controller.sessions.manager import SESSIONS

    session_id = await new_session(client, admin_headers)
    manager = client.app[SESSIONS]
    session = manager._sessions[session_id]
    assert session.sandbox is not None
    container_id = session.sandbox.handle.engine_id
    session.last_used = time.time() - settings.session_idle_timeout - 1
    await manager.reap_idle()
    resp = await client.post(
        f"/sessions/{session_id}/execute", json={"code": "1"}, headers=admin_headers
    )
    assert resp.status == 410
    assert "without use" in (await resp.json())["message"]
    assert not docker.from_env().containers.list(all=True, filters={"id": container_id})
