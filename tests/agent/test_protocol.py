"""The framing both ends share, over a real socket pair."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time

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


@pytest.mark.parametrize("size", [10, protocol.SMALL_FRAME - 4, 3 * protocol.SMALL_FRAME])
@pytest.mark.parametrize("timeout", [None, 10.0])
def test_a_frame_arriving_in_pieces_is_read_whole(size: int, timeout: float | None) -> None:
    """Small frames are read with one ``recv`` that waits for all of them, large ones piece
    by piece; either way a frame that trickles in (a signal, a slow writer, a socket with a
    timeout, which does not wait for all) comes out whole."""
    a, b = socket.socketpair()
    b.settimeout(timeout)
    data = protocol.encode_head({"pad": "x" * size}) + protocol.encode_head({"id": 2})
    cut = [0, 1, 3, 7, len(data) // 2, len(data) - 5, len(data)]

    def trickle() -> None:
        for start, end in itertools.pairwise(cut):
            time.sleep(0.02)
            a.sendall(data[start:end])

    with a, b:
        writer = threading.Thread(target=trickle)
        writer.start()
        try:
            assert protocol.recv_message(b, 1 << 20, 0) == ({"pad": "x" * size}, None)
            assert protocol.recv_message(b, 1 << 20, 0) == ({"id": 2}, None)
        finally:
            writer.join()


@pytest.mark.parametrize("size", [10, 3 * protocol.SMALL_FRAME])
def test_a_frame_cut_short_is_the_end_of_the_stream(size: int) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(protocol.encode_head({"pad": "x" * size})[:-3])
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            protocol.recv_message(b, 1 << 20, 0)
