"""Issue 8 item 11: a controller restart never destroys a session, not even one whose code
runs longer than the adopt timeout.

The first controller is a real ``o16n serve`` process, killed with SIGKILL while the
session's code runs; the second is an app on the same data directory and instance. The
agent keeps running the code, dials in again at once and says which execution runs; the
second controller adopts the session as busy, collects the result and records it in the
history and console output, as the first would have.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from controller.app import create_app
from controller.settings import Settings
from tests.conftest import ADMIN_PASSWORD, bearer, database_env, login, make_settings
from tests.sessions.conftest import execute

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
ADOPT_TIMEOUT = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "O16N_DATA_DIR": str(settings.data_dir),
        "O16N_INSTANCE": settings.instance,
        "O16N_PORT": str(port),
        "O16N_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "O16N_WARM_POOL_SIZE": "0",
        "O16N_SERVICE_WARM_POOL_SIZE": "0",
        "O16N_LOG_LEVEL": "WARNING",
        "O16N_LOG_FORMAT": "text",
        "O16N_ACCESS_LOG": "false",
        **database_env(settings.data_dir),
    }
    return subprocess.Popen([sys.executable, "-m", "controller", "serve"], env=env, cwd=ROOT)


async def first_controller(
    http: aiohttp.ClientSession, process: subprocess.Popen[bytes], url: str
) -> dict[str, str]:
    """Wait until the controller answers; its admin's bearer headers."""
    for _ in range(600):
        assert process.poll() is None, "the controller exited"
        try:
            async with http.post(
                f"{url}/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            ) as resp:
                return bearer((await resp.json())["access_token"])
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError("the controller did not start")


async def crash_during(settings: Settings, code: str) -> tuple[str, float]:
    """Run ``o16n serve``, make a session (one execution recorded), start ``code`` in it and
    SIGKILL the controller while it runs; the session's id and when it was killed."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    session_id, killed_at = "", 0.0
    process = serve(settings, port)
    try:
        async with aiohttp.ClientSession() as http:
            headers = await first_controller(http, process, url)
            async with http.post(
                f"{url}/sessions", json={"runtimeType": "Python"}, headers=headers
            ) as resp:
                assert resp.status == 201, await resp.text()
                session_id = (await resp.json())["sessionId"]
            async with http.post(
                f"{url}/sessions/{session_id}/execute", json={"code": "x = 1"}, headers=headers
            ) as resp:
                assert (await resp.json())["success"]
            async with http.get(f"{url}/sessions/{session_id}/history", headers=headers) as resp:
                assert await resp.json() == ["x = 1"]  # written before the crash

            running = asyncio.create_task(
                http.post(
                    f"{url}/sessions/{session_id}/execute", json={"code": code}, headers=headers
                )
            )
            await asyncio.sleep(1.5)  # the code runs now
            killed_at = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            with pytest.raises(aiohttp.ClientError):
                await running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return session_id, killed_at


def restart_settings(data_dir: Path) -> Settings:
    return make_settings(
        data_dir,
        warm_pool_size=0,
        service_warm_pool_size=0,
        adopt_timeout=ADOPT_TIMEOUT,
        session_busy_wait=0,
    )


#: how the code waits: in Python (the agent's redialling thread runs meanwhile), or in a C
#: call that holds the GIL (the agent is silent until it returns)
WAITS = {"python": "time.sleep({})", "gil": "ctypes.PyDLL(None).sleep({})"}


@pytest.mark.parametrize(
    ("ends_before_restart", "wait"),
    [(False, "python"), (True, "python"), (False, "gil")],
    ids=["running", "ended", "holding-the-gil"],
)
async def test_an_execution_outlives_a_controller_crash(
    aiohttp_client: Any, data_dir: Path, ends_before_restart: bool, wait: str
) -> None:
    settings = restart_settings(data_dir)
    sleep = 4 if ends_before_restart else 10 + ADOPT_TIMEOUT
    code = (
        f"import ctypes, time\nprint('started')\n{WAITS[wait].format(sleep)}\n"
        "print('finished')\nanswer = 42"
    )
    session_id, killed_at = await crash_during(settings, code)
    if ends_before_restart:
        await asyncio.sleep(max(0.0, sleep + 1.0 - (time.monotonic() - killed_at)))

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    listed = {s["id"] for s in await (await second.get("/sessions", headers=headers)).json()}
    assert session_id in listed, "the session was adopted"
    if not ends_before_restart:
        assert time.monotonic() - killed_at < sleep, "the code still runs"
        busy = await second.post(
            f"/sessions/{session_id}/execute", json={"code": "1"}, headers=headers
        )
        assert busy.status == 409, await busy.text()

    history: list[str] = []
    for _ in range(300):
        history = await (
            await second.get(f"/sessions/{session_id}/history", headers=headers)
        ).json()
        if len(history) == 2:
            break
        await asyncio.sleep(0.1)
    assert history == ["x = 1", code]
    console = await (
        await second.get(f"/sessions/{session_id}/console-output", headers=headers)
    ).json()
    assert console["consoleOutput"] == "started\nfinished\n"

    result = await execute(second, headers, session_id, "answer += x", outputParameters=["answer"])
    assert result["success"] and result["outputParameters"] == [{"name": "answer", "value": 43}]
    history = await (await second.get(f"/sessions/{session_id}/history", headers=headers)).json()
    assert len(history) == 3
    await second.close()


async def test_a_session_whose_agent_is_silent_can_be_closed(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """Closed while the restarted controller waits for its agent: the container goes."""
    settings = restart_settings(data_dir)
    session_id, _ = await crash_during(settings, "import ctypes\nctypes.PyDLL(None).sleep(60)")
    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    assert (await second.post(f"/sessions/{session_id}/cancel", headers=headers)).status < 500
    resp = await second.delete(f"/sessions/{session_id}", headers=headers)
    assert resp.status in (200, 204), await resp.text()
    listed = {s["id"] for s in await (await second.get("/sessions", headers=headers)).json()}
    assert session_id not in listed
    await second.close()
    engine = docker.from_env()
    assert (
        engine.containers.list(all=True, filters={"label": f"o16n.instance={settings.instance}"})
        == []
    )


def test_the_agent_redials_until_a_controller_collects_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process agent, the test plays the controllers: the first and the second hang up
    while the code runs; the third gets a hello naming the execution and its result."""
    from o16n_agent import protocol
    from o16n_agent.agent import Agent

    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    listener.settimeout(10)
    agent = Agent(path, str(tmp_path))
    stop = threading.Event()

    def serve() -> None:  # serve_forever without its signal handlers (not the main thread)
        while not stop.is_set():
            try:
                agent._serve(agent._connect())
            except OSError:
                time.sleep(0.05)

    def controller() -> tuple[socket.socket, dict[str, Any]]:
        conn, _ = listener.accept()
        conn.settimeout(10)
        hello, _ = protocol.recv_message(conn, 1 << 16, 0)
        assert hello["op"] == "hello"
        return conn, hello

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        first, hello = controller()
        assert "execution" not in hello
        code = "import time\ntime.sleep(2.5)\nprint('done')\nanswer = 42"
        protocol.send_message(first, {"id": 1, "op": "execute", "code": code, "seq": 7})
        time.sleep(0.3)
        first.close()  # a controller crash
        second, hello = controller()
        assert hello["execution"] == {"seq": 7, "running": True}
        second.close()  # the restarted controller goes away too
        third, hello = controller()
        assert hello["execution"] == {"seq": 7, "running": True}
        protocol.send_message(third, {"id": 1, "op": "execution_result", "seq": 7})
        reply, _ = protocol.recv_message(third, 1 << 20, 0)
        assert reply["id"] == 1 and reply["ok"] and reply["success"]
        assert reply["console"] == "done\n" and reply["code"] == code
        protocol.send_message(third, {"id": 2, "op": "execute", "code": "answer + 1", "seq": 8})
        reply, _ = protocol.recv_message(third, 1 << 20, 0)
        assert reply["id"] == 2 and reply["console"] == "43\n"
        protocol.send_message(third, {"id": 3, "op": "execution_result", "seq": 7})
        reply, _ = protocol.recv_message(third, 1 << 20, 0)
        assert reply["ok"] is False and reply["code"] == "not_found"  # only the last is kept
        stop.set()
        third.close()
    finally:
        stop.set()
        listener.close()
        os.unlink(path)
        thread.join(10)
