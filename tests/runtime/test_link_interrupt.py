"""``AgentLink.interrupt`` against a scripted agent over the real Unix socket: the
acknowledgement comes before the reply, a request answered meanwhile needs none, a silent
agent is reported as such, and only a request that runs user code is interrupted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from o16n_agent import protocol

from controller.runtime.agent_link import AgentLink, AgentListener

LIMIT = 1 << 20
Agent = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[AgentLink, Agent]]:
    listener = AgentListener(tmp_path / "k", LIMIT, LIMIT)
    await listener.start()
    reader, writer = await asyncio.open_unix_connection(str(listener.socket_path))
    writer.write(protocol.encode_head({"op": "hello", "version": protocol.VERSION}))
    link = await listener.wait_link(5)
    yield link, (reader, writer)
    await listener.close()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def receive(agent: Agent) -> dict[str, Any]:
    message, _ = await protocol.read_message(agent[0], LIMIT, 0)
    return message


def send(agent: Agent, message: dict[str, Any]) -> None:
    agent[1].write(protocol.encode_head(message))


async def test_acknowledged_before_the_reply(wired: tuple[AgentLink, Agent]) -> None:
    link, agent = wired
    call = asyncio.create_task(link.call("execute", {"code": "x"}, timeout=10))
    request = await receive(agent)
    interrupt = asyncio.create_task(link.interrupt(5))
    message = await receive(agent)
    assert message == {"id": message["id"], "op": "interrupt"} and message["id"] != request["id"]
    send(agent, {"id": message["id"], "ok": True})
    assert await interrupt == "acknowledged"
    send(agent, {"id": request["id"], "ok": True, "cancelled": True})
    reply, _ = await call
    assert reply["cancelled"] is True and not link.closed


async def test_a_reply_instead_of_an_acknowledgement_ends_the_wait(
    wired: tuple[AgentLink, Agent],
) -> None:
    link, agent = wired
    call = asyncio.create_task(link.call("run", {"inputs": {}}, timeout=10))
    request = await receive(agent)
    interrupt = asyncio.create_task(link.interrupt(5))
    await receive(agent)  # the interrupt crossed the reply: the agent drops it
    send(agent, {"id": request["id"], "ok": True})
    assert await asyncio.wait_for(interrupt, 1) == "idle"
    await call
    # the next call reads its own reply: nothing was left on the stream
    call = asyncio.create_task(link.call("ping", timeout=10))
    send(agent, {"id": (await receive(agent))["id"], "ok": True, "pong": True})
    assert (await call)[0]["pong"] is True


async def test_a_silent_agent_and_what_is_not_interrupted(wired: tuple[AgentLink, Agent]) -> None:
    link, agent = wired
    assert await link.interrupt(1) == "idle"  # nothing in flight: nothing sent
    call = asyncio.create_task(link.call("file_get", {"name": "a"}, timeout=10))
    request = await receive(agent)
    assert await link.interrupt(1) == "idle"  # it runs no user code
    send(agent, {"id": request["id"], "ok": True})
    await call
    call = asyncio.create_task(link.call("execute", {"code": "x"}, timeout=10))
    request = await receive(agent)
    assert await link.interrupt(0.2) == "silent"
    send(agent, {"id": request["id"], "ok": True})
    await call
    assert not link.closed
