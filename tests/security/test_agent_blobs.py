"""Issue 8, items 1 and 2: an agent's replies are checked at their head, limited per call and
streamed, so no tenant can make the controller hold a large blob.

Session code shares the agent's process, so it can write to the agent's socket (it is one
of the process's descriptors) or replace the agent's handlers: these tests do both.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from o16n_agent import protocol

from bench import memory
from controller.app import create_app
from controller.errors import AgentProtocolError
from controller.runtime.agent_link import AgentLink, AgentListener
from tests.conftest import bearer, login, make_settings
from tests.live_server import run_server
from tests.sessions.conftest import execute, new_session

MIB = 1 << 20

#: Session code: the id of the request the agent is answering (found on the stack), and a
#: write of ``frame`` (bytes) to the agent's socket, as if it were the agent's reply.
FORGE = """
import os, sys
def _request_id():
    f = sys._getframe()
    while f is not None:
        if "request_id" in f.f_locals:
            return f.f_locals["request_id"]
        f = f.f_back
def _agent_socket():
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                return int(fd)
        except OSError:
            pass
"""


# --- the bound: many large downloads and a huge unsolicited blob ------------------------------


@pytest.mark.docker
def test_controller_memory_stays_bounded_under_downloads_and_a_lying_agent() -> None:
    """3 sessions download 200 MiB each while a fourth announces an unsolicited 2 GiB blob:
    the controller's peak RSS stays under its idle baseline + 128 MiB, every download is
    intact, the liar's session is reported ended with the reason, the others are served."""
    servers = run_server(sessions_per_user="10", warm_pool_size="0", service_warm_pool_size="0")
    server = next(servers)
    try:
        token = server.headers["Authorization"].removeprefix("Bearer ")
        figures = asyncio.run(
            memory.measure(server.url, token, server.process.pid, 3, 200 * MIB, 2048 * MIB)
        )
    finally:
        with contextlib.suppress(StopIteration):
            next(servers)
    assert figures["downloads_intact"] == 3, figures
    assert figures["peak_above_baseline_bytes"] < memory.TARGET_MIB * MIB, figures
    assert figures["attacker_status"] == 410, figures
    assert "no request was waiting" in figures["attacker_reply"], figures


@pytest.mark.docker
def test_uploads_workspace_objects_and_snapshots_stream_through_the_controller() -> None:
    """A 96 MiB upload, workspace object (set and got), snapshot (taken, loaded, started
    from) and snapshot zip: each arrives intact and the controller's peak RSS stays under
    its idle baseline + 128 MiB (holding any of them whole, twice, would not)."""
    servers = run_server(
        warm_pool_size="0",
        service_warm_pool_size="0",
        container_fsize=str(160 * MIB),
        container_work_size=str(160 * MIB),
    )
    server = next(servers)
    try:
        token = server.headers["Authorization"].removeprefix("Bearer ")
        figures = asyncio.run(
            memory.measure_transfers(server.url, token, server.process.pid, 96 * MIB)
        )
    finally:
        with contextlib.suppress(StopIteration):
            next(servers)
    assert all(figures["checks"].values()), figures
    assert figures["peak_above_baseline_bytes"] < memory.TARGET_MIB * MIB, figures


# --- refusals at the head, with the real agent -----------------------------------------------


@pytest.fixture
async def small_blobs(
    aiohttp_client: Any, data_dir: Path
) -> AsyncIterator[tuple[TestClient[Any, Any], dict[str, str]]]:
    """An app whose agents may send blobs of at most 1 MiB, and admin's headers."""
    settings = make_settings(data_dir, agent_blob_max_bytes=MIB, warm_pool_size=0)
    client = await aiohttp_client(create_app(settings))
    yield client, bearer((await login(client))["access_token"])


@pytest.mark.docker
async def test_a_blob_over_the_calls_limit_is_refused_by_an_honest_agent(
    small_blobs: tuple[TestClient[Any, Any], dict[str, str]],
) -> None:
    client, headers = small_blobs
    session = await new_session(client, headers)
    await execute(
        client, headers, session, "open('big', 'wb').write(bytes(2 << 20))\nbig = b'x' * (2 << 20)"
    )
    resp = await client.get(f"/sessions/{session}/files/big", headers=headers)
    assert resp.status == 413, await resp.text()
    resp = await client.get(f"/sessions/{session}/workspace/big", headers=headers)
    assert resp.status == 413, await resp.text()
    resp = await client.get(f"/sessions/{session}/files", headers=headers)  # still alive
    assert resp.status == 200 and "big" in await resp.json()


@pytest.mark.docker
async def test_a_lying_agent_that_sends_more_than_the_limit_is_cut_off_at_the_head(
    small_blobs: tuple[TestClient[Any, Any], dict[str, str]],
) -> None:
    """User code replaces the agent's file_get with one that ignores the limit: the reply
    is refused at its head, the session ends with the reason, other sessions go on."""
    client, headers = small_blobs
    victim = await new_session(client, headers)
    other = await new_session(client, headers)
    code = (
        "import gc, os\n"
        "from o16n_agent import agent, protocol\n"
        "open('big', 'wb').write(bytes(64 << 20))\n"
        "a = next(o for o in gc.get_objects() if isinstance(o, agent.Agent))\n"
        "def lying_get(message, blob):\n"
        "    fd = os.open('big', os.O_RDONLY)\n"
        "    return {}, protocol.FileBlob(fd, os.fstat(fd).st_size)\n"
        "a.handlers['file_get'] = lying_get\n"
        "agent._check_blob_limit = lambda message, blob: None\n"
    )
    await execute(client, headers, victim, code)
    resp = await client.get(f"/sessions/{victim}/files/big", headers=headers)
    assert resp.status == 410, await resp.text()
    message = (await resp.json())["message"]
    assert "announces a blob of 67108864 bytes; it may carry at most 1048576" in message
    resp = await client.get(f"/sessions/{victim}/files", headers=headers)
    assert resp.status == 410
    result = await execute(client, headers, other, "1 + 1")
    assert result["success"] is True


@pytest.mark.docker
async def test_a_reply_with_a_blob_to_a_call_that_expects_none_ends_the_session(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """The code forges the answer to its own execute request (the right id), carrying a
    blob: execute takes none, so the reply is refused at its head."""
    headers = admin_headers
    session = await new_session(client, headers)
    code = FORGE + (
        "import json, struct\n"
        "head = json.dumps({'id': _request_id(), 'ok': True, 'blob': 1 << 30}).encode()\n"
        "os.write(_agent_socket(), struct.pack('>I', len(head)) + head)\n"
        "import time; time.sleep(5)\n"
    )
    resp = await client.post(f"/sessions/{session}/execute", json={"code": code}, headers=headers)
    result = await resp.json()
    assert resp.status == 200 and result["success"] is False, result
    assert "a reply to execute carries a blob, which it may not" in result["errorMessage"]
    resp = await client.get(f"/sessions/{session}/files", headers=headers)
    assert resp.status == 410


@pytest.mark.docker
async def test_an_unsolicited_frame_ends_only_its_own_session(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A frame when no request waits is refused at its 4-byte length: the session is
    reported ended with the reason; another session's download is served meanwhile."""
    headers = admin_headers
    liar = await new_session(client, headers)
    other = await new_session(client, headers)
    await execute(client, headers, other, "open('f', 'wb').write(bytes(range(256)) * 40000)")
    code = FORGE + (
        "import threading, time, struct\n"
        "def later():\n"
        "    time.sleep(0.5)\n"
        "    os.write(_agent_socket(), struct.pack('>I', 60 << 20))\n"
        "threading.Thread(target=later, daemon=True).start()\n"
    )
    await execute(client, headers, liar, code)
    await asyncio.sleep(1.5)
    resp = await client.get(f"/sessions/{other}/files/f", headers=headers)
    assert resp.status == 200
    assert (
        hashlib.sha256(await resp.read()).digest()
        == hashlib.sha256(bytes(range(256)) * 40000).digest()
    )
    resp = await client.get(f"/sessions/{liar}/workspace", headers=headers)
    assert resp.status == 410
    assert "a frame arrived when no request was waiting for one" in (await resp.json())["message"]


@pytest.mark.docker
async def test_a_client_that_leaves_mid_download_leaves_the_session_usable(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """The download's response cannot take more, so the rest of the file is read from the
    agent and dropped: the session stays in step and answers the next call."""
    headers = admin_headers
    session = await new_session(client, headers)
    await execute(client, headers, session, "open('big', 'wb').write(bytes(64 << 20))")
    resp = await client.get(f"/sessions/{session}/files/big", headers=headers)
    assert resp.status == 200 and resp.content_length == 64 * MIB
    await resp.content.readexactly(MIB)
    resp.close()  # the connection goes with it
    resp = await client.get(f"/sessions/{session}/files", headers=headers)
    assert resp.status == 200 and await resp.json() == ["big"], await resp.text()
    resp = await client.get(f"/sessions/{session}/files/big", headers=headers)
    assert resp.status == 200 and len(await resp.read()) == 64 * MIB


# --- the link's reader, byte by byte (a fake agent on the real socket) -----------------------


async def _linked(tmp_path: Path) -> tuple[AgentListener, AgentLink, socket.socket]:
    listener = AgentListener(tmp_path / "k", 64 * MIB, 2048 * MIB)
    await listener.start()
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await asyncio.to_thread(agent.connect, str(listener.socket_path))
    await asyncio.to_thread(
        agent.sendall, protocol.encode_head({"op": "hello", "version": protocol.VERSION})
    )
    return listener, await listener.wait_link(5), agent


def _flood(agent: socket.socket, head: bytes, total: int) -> int:
    """Write ``head`` then zeros up to ``total`` bytes; how many the controller took before
    it hung up."""
    agent.settimeout(10)
    sent = 0
    zeros = bytes(MIB)
    try:
        agent.sendall(head)
        sent = len(head)
        while sent < total:
            sent += agent.send(zeros[: total - sent])
    except OSError:
        pass
    return sent


async def test_an_unsolicited_frame_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    listener, link, agent = await _linked(tmp_path)
    try:
        head = struct.pack(">I", 60 * MIB)  # a 60 MiB JSON frame: within the reply limit
        sent = await asyncio.to_thread(_flood, agent, head, 60 * MIB)
        assert link.closed
        assert sent < 8 * MIB  # socket buffers and the reader's bounded buffer, no more
        assert link.failure is not None
        assert "no request was waiting" in link.failure.message
        with pytest.raises(AgentProtocolError, match="no request was waiting"):
            await link.call("ping", timeout=5)
    finally:
        agent.close()
        await listener.close()


async def test_a_blob_larger_than_the_call_allows_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    listener, link, agent = await _linked(tmp_path)
    try:
        call = asyncio.create_task(
            link.call("file_get", timeout=10, blob_limit=MIB, sink=_NullSink())
        )
        request = await asyncio.to_thread(agent.recv, 4096)
        assert b'"blob_limit":1048576' in request
        head = protocol.encode_head({"id": 1, "ok": True}, 512 * MIB)
        sent = await asyncio.to_thread(_flood, agent, head, 512 * MIB)
        with pytest.raises(AgentProtocolError, match="announces a blob of 536870912 bytes"):
            await call
        assert sent < 8 * MIB
    finally:
        agent.close()
        await listener.close()


async def test_a_streamed_blob_moves_in_pieces_and_a_failed_sink_keeps_the_link(
    tmp_path: Path,
) -> None:
    """The blob reaches the sink in pieces of at most CHUNK bytes; when the sink fails (a
    client that went away) the rest is dropped and the link stays usable."""
    listener, link, agent = await _linked(tmp_path)
    try:
        sink = _NullSink(fail_after=3)
        call = asyncio.create_task(
            link.call("file_get", timeout=10, blob_limit=64 * MIB, sink=sink)
        )
        await asyncio.to_thread(agent.recv, 4096)
        await asyncio.to_thread(
            agent.sendall, protocol.encode_head({"id": 1, "ok": True}, b"\x07" * (8 * MIB))
        )
        await asyncio.to_thread(agent.sendall, b"\x07" * (8 * MIB))
        with pytest.raises(Exception, match="client went away"):
            await call
        assert sink.size == 8 * MIB
        assert max(sink.pieces) <= protocol.CHUNK
        ping = asyncio.create_task(link.call("ping", timeout=10))
        await asyncio.to_thread(agent.recv, 4096)
        await asyncio.to_thread(agent.sendall, protocol.encode_head({"id": 2, "ok": True}))
        reply, blob = await ping
        assert reply["ok"] is True and blob is None and not link.closed
    finally:
        agent.close()
        await listener.close()


class _NullSink:
    def __init__(self, fail_after: int | None = None) -> None:
        self.size = 0
        self.pieces: list[int] = []
        self._fail_after = fail_after

    async def start(self, size: int) -> None:
        self.size = size

    async def write(self, chunk: bytes) -> None:
        self.pieces.append(len(chunk))
        if self._fail_after is not None and len(self.pieces) >= self._fail_after:
            raise aiohttp.ClientConnectionResetError("the client went away")
