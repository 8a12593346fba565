"""The agent listener's lifecycle without a container: a fake agent dials in over the real
Unix socket. Closing the listener must leave no connection open, whenever the agent dials."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

import pytest
from o16n_agent import protocol

from controller.runtime.agent_link import AgentListener

LIMIT = 1 << 20


async def dial(listener: AgentListener) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(listener.socket_path))
    writer.write(protocol.encode_head({"op": "hello", "version": protocol.VERSION}))
    await writer.drain()
    return reader, writer


async def hang_up(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):  # the listener may have reset it first
        await writer.wait_closed()


async def refused(reader: asyncio.StreamReader) -> bool:
    """Whether the listener hung up on this connection (an abort arrives as a reset)."""
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def socket_dir(tmp_path: Path) -> Path:
    return tmp_path / "k"


async def test_an_agent_that_dials_in_gets_a_link(socket_dir: Path) -> None:
    listener = AgentListener(socket_dir, LIMIT, LIMIT)
    await listener.start()
    _, writer = await dial(listener)
    link = await listener.wait_link(5)
    assert link.hello["version"] == protocol.VERSION
    await listener.close()
    assert link.closed
    assert not listener.socket_path.exists()
    await hang_up(writer)


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_an_agent_dialling_in_while_the_listener_closes_leaves_nothing_open(
    socket_dir: Path, yields: int
) -> None:
    listener = AgentListener(socket_dir, LIMIT, LIMIT)
    await listener.start()
    _, writer = await dial(listener)
    for _ in range(yields):  # close at every stage of the accept and the handshake
        await asyncio.sleep(0)
    await listener.close()
    assert listener.link is None
    for _ in range(20):  # what close() let through would be accepted now
        await asyncio.sleep(0)
    assert listener.link is None
    await hang_up(writer)
    gc.collect()  # an unclosed transport warns here (warnings are errors in this suite)


async def test_a_bad_hello_is_refused_and_the_agent_can_dial_again(socket_dir: Path) -> None:
    listener = AgentListener(socket_dir, LIMIT, LIMIT)
    await listener.start()
    reader, writer = await asyncio.open_unix_connection(str(listener.socket_path))
    writer.write(protocol.encode_head({"op": "hello", "version": -1}))
    assert await refused(reader)
    await hang_up(writer)
    _, writer = await dial(listener)
    link = await listener.wait_link(5)
    second_reader, second = await dial(listener)  # one link at a time
    assert await refused(second_reader)
    assert listener.link is link
    await hang_up(second)
    await listener.close()
    await hang_up(writer)
