"""What session code cannot do, proven against the real engine: reach the network, see
another session's files, write outside its workspace; and how a fork bomb, a memory bomb
and a disk-fill loop end: a clean error, while another user's session keeps answering."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import make_settings, user_headers
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker


@pytest.fixture
async def small_client(aiohttp_client: Any, data_dir: Any) -> TestClient[Any, Any]:
    """Tight limits, so bombs go off quickly."""
    settings = make_settings(
        data_dir,
        container_memory="384MiB",
        container_work_size="64MiB",
        container_tmp_size="16MiB",
        container_fsize="128MiB",
        container_pids=64,
        execute_timeout=60,
    )
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    return client


async def test_no_network(client: TestClient[Any, Any], admin_headers: dict[str, str]) -> None:
    session_id = await new_session(client, admin_headers)
    code = (
        "import socket\nresults = []\n"
        "for host in [('1.1.1.1', 53), ('172.17.0.1', 2375), ('deb.debian.org', 80)]:\n"
        "    try:\n"
        "        socket.create_connection(host, timeout=3).close()\n"
        "        results.append('connected')\n"
        "    except OSError as exc:\n"
        "        results.append(type(exc).__name__)\n"
        "ifaces = sorted(n for _, n in socket.if_nameindex())"
    )
    result = await execute(
        client, admin_headers, session_id, code, outputParameters=["results", "ifaces"]
    )
    assert result["success"], result
    values = {o["name"]: o["value"] for o in result["outputParameters"]}
    assert "connected" not in values["results"]
    assert values["ifaces"] == ["lo"]


async def test_sessions_cannot_see_each_other(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    other_headers = await user_headers(client, "neighbour")
    mine = await new_session(client, admin_headers)
    theirs = await new_session(client, other_headers)
    await execute(client, other_headers, theirs, "open('secret.txt', 'w').write('s3cret')")
    code = (
        "import os, glob\nroots = ('/work', '/tmp', '/run', '/home', '/var', '/opt', '/mnt')\n"
        "found = [p for d in roots for p in glob.glob(d + '/**/secret.txt', recursive=True)]\n"
        "mine = sorted(os.listdir('.'))\nsockets = sorted(os.listdir('/run/o16n'))"
    )
    result = await execute(
        client, admin_headers, mine, code, outputParameters=["found", "mine", "sockets"]
    )
    values = {o["name"]: o["value"] for o in result["outputParameters"]}
    assert values == {"found": [], "mine": [], "sockets": ["agent.sock"]}


async def test_no_writes_outside_the_workspace(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    session_id = await new_session(client, admin_headers)
    code = (
        "import os\nresults = {}\n"
        "for path in ['/etc/evil', '/opt/o16n/evil', '/run/o16n/evil', '/usr/evil', '/evil',\n"
        "             '/tmp/ok', '/work/ok']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        results[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        results[path] = exc.strerror\n"
        "uid = os.getuid()\n"
        "caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]"
    )
    result = await execute(
        client, admin_headers, session_id, code, outputParameters=["results", "uid", "caps"]
    )
    values = {o["name"]: o["value"] for o in result["outputParameters"]}
    written = {p for p, r in values["results"].items() if r == "written"}
    assert written == {"/tmp/ok", "/work/ok"}, values["results"]
    assert values["uid"] == 1000
    assert int(values["caps"], 16) == 0


async def _bystander(client: TestClient[Any, Any]) -> tuple[dict[str, str], str]:
    headers = await user_headers(client, "bystander")
    return headers, await new_session(client, headers)


async def _still_answers(
    client: TestClient[Any, Any], headers: dict[str, str], session_id: str
) -> None:
    result = await execute(client, headers, session_id, "21 * 2")
    assert result["success"] and result["consoleOutput"] == "42\n"


async def test_fork_bomb_ends_in_a_clean_error(
    small_client: TestClient[Any, Any],
) -> None:
    client = small_client
    headers = await user_headers(client, "forker")
    bystander = await _bystander(client)
    session_id = await new_session(client, headers)
    bomb = asyncio.ensure_future(
        execute(client, headers, session_id, "import os\nwhile True:\n    os.fork()")
    )
    await asyncio.sleep(1)
    await _still_answers(client, *bystander)
    result = await asyncio.wait_for(bomb, 60)
    assert result["success"] is False
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in result["errorMessage"]
    await _still_answers(client, *bystander)
    assert (await client.get("/status", headers=headers)).status == 200


async def test_memory_bomb_ends_in_a_clean_error(small_client: TestClient[Any, Any]) -> None:
    client = small_client
    headers = await user_headers(client, "hog")
    bystander = await _bystander(client)
    session_id = await new_session(client, headers)
    result = await execute(
        client,
        headers,
        session_id,
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))",
    )
    assert result["success"] is False
    assert "out of memory" in result["errorMessage"] or "MemoryError" in result["errorMessage"]
    if "out of memory" in result["errorMessage"]:
        resp = await client.post(
            f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers
        )
        assert resp.status == 410
        assert "out of memory" in (await resp.json())["message"]
    await _still_answers(client, *bystander)


async def test_disk_fill_ends_in_a_clean_error(small_client: TestClient[Any, Any]) -> None:
    client = small_client
    headers = await user_headers(client, "filler")
    bystander = await _bystander(client)
    session_id = await new_session(client, headers)
    for path in ("big.bin", "/tmp/big.bin"):
        result = await execute(
            client,
            headers,
            session_id,
            f"with open({path!r}, 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))",
        )
        assert result["success"] is False
        assert "No space left on device" in result["errorMessage"], result["errorMessage"]
    result = await execute(client, headers, session_id, "import os\nos.remove('big.bin')\n'ok'")
    assert result["success"] and result["consoleOutput"] == "'ok'\n"
    await _still_answers(client, *bystander)
