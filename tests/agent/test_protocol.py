"""The framing both ends share, over a real socket pair."""

from __future__ import annotations

import asyncio
import socket

import pytest
from o16n_agent import protocol


def test_message_and_blob_round_trip_over_a_blocking_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        protocol.send_message(a, {"id": 1, "op": "x", "text": "héllo"}, b"\x00\x01raw")
        message, blob = protocol.recv_message(b, 1 << 20, 1 << 20)
    assert message == {"id": 1, "op": "x", "text": "héllo", "blob": 5}
    assert blob == b"\x00\x01raw"


def test_frames_over_the_limit_are_refused() -> None:
    a, b = socket.socketpair()
    with a, b:
        protocol.send_message(a, {"pad": "x" * 1000})
        with pytest.raises(protocol.ProtocolError, match="exceeds"):
            protocol.recv_message(b, 100, 100)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1, 2]",
        b'{"blob": -1}',
        b'{"blob": "3"}',
        b'{"x": NaN}',
        b'{"x": 1e400}',
        b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
)
def test_malformed_messages_are_protocol_errors(payload: bytes) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.HEADER.pack(len(payload)) + payload)
        with pytest.raises(protocol.ProtocolError):
            protocol.recv_message(b, 1 << 20, 1 << 20)


async def test_asyncio_reader_matches_the_blocking_writer() -> None:
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=b)
    try:
        await asyncio.to_thread(protocol.send_message, a, {"id": 7, "ok": True}, b"z" * 100_000)
        message, blob = await protocol.read_message(reader, 1 << 20, 1 << 20)
        assert message["id"] == 7 and blob == b"z" * 100_000
        a.sendall(protocol.HEADER.pack(10) + b"{}")
        a.close()
        with pytest.raises(asyncio.IncompleteReadError):
            await protocol.read_message(reader, 1 << 20, 1 << 20)
    finally:
        writer.close()
