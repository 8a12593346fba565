"""The controller ⇄ agent wire protocol, version 1. Stdlib only: both ends import this module.

Transport: a Unix stream socket. The controller listens on it in a per-container host
directory mounted read-only into the container; the agent dials in.

Frames: a 4-byte big-endian unsigned length, then that many bytes. A *message* is one
frame holding a UTF-8 JSON object, optionally followed by one more frame of raw bytes
(the *blob*) when the object carries ``"blob": <length>``. Blobs carry what JSON should
not: dill pickles of workspace objects, file contents, workspace tarballs.

Conversation: after connecting, the agent sends ``{"op": "hello", "version": 1, ...}``.
Then the controller sends requests ``{"id": n, "op": ..., ...}`` and the agent answers
each with ``{"id": n, "ok": true, ...}`` or ``{"id": n, "ok": false, "error": ...}``, one
request in flight at a time. Both ends cap frame sizes; the controller also puts a
deadline on every reply and checks its shape, because the agent shares a uid with user
code and is untrusted.

Hello fields: ``version``, ``pid``, ``python`` and, once a session has run a numbered
``execute`` (the controller sends ``"seq": n``, its history number), ``"execution":
{"seq": n, "running": bool}``: the one running now, else the last one, whose result the
agent keeps until the next ``execute``. The agent dials again at once when the controller
goes away during an execution, so a restarted controller learns that the session is busy;
it then asks ``{"op": "execution_result", "seq": n}``, answered (when the execution ends)
with the ``execute`` reply's fields plus ``"code"``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

orjson: Any
try:  # the same JSON, faster, where orjson is installed (the controller, the runtime image)
    import orjson
except ImportError:  # pragma: no cover - plain stdlib works too
    orjson = None

VERSION = 1
HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the protocol (bad frame, oversized message, bad JSON)."""


def encode_head(message: dict[str, Any], blob: bytes | None = None) -> bytes:
    """``message`` framed for sending, followed (when a ``blob`` goes with it) by the blob's
    length header: the sender writes the blob itself after this, so that a large blob (a
    snapshot's tarball) is never copied into one buffer with its headers."""
    if blob is not None:
        message = {**message, "blob": len(blob)}
    data = dumps(message)
    head = HEADER.pack(len(data)) + data
    if blob is not None:
        head += HEADER.pack(len(blob))
    return head


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused, never written."""
    if orjson is not None:
        try:
            data: bytes = orjson.dumps(value)
        except TypeError:  # integers beyond 64 bits: the stdlib handles them
            pass
        else:
            return data
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def loads(data: bytes) -> Any:
    """Parse strict JSON; raises ``ValueError`` when it is not,
    NaN and infinities included. (orjson reads integers beyond 64 bits as floats.)"""
    if orjson is not None:
        return orjson.loads(data)
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message


def blob_length(message: dict[str, Any]) -> int | None:
    """The announced blob length of ``message``, or ``None``."""
    length = message.get("blob")
    if length is None:
        return None
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise ProtocolError("'blob' must be a non-negative integer")
    return length


# --- blocking side (the agent) -----------------------------------------------------------


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        count = sock.recv_into(view[got:], n - got)
        if count == 0:
            raise EOFError("peer closed the connection")
        got += count
    return bytes(buf)


def recv_frame(sock: socket.socket, limit: int) -> bytes:
    (length,) = HEADER.unpack(recv_exactly(sock, HEADER.size))
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
    return recv_exactly(sock, length)


def recv_message(
    sock: socket.socket, limit: int, blob_limit: int
) -> tuple[dict[str, Any], bytes | None]:
    message = decode(recv_frame(sock, limit))
    length = blob_length(message)
    if length is None:
        return message, None
    blob = recv_frame(sock, blob_limit)
    if len(blob) != length:
        raise ProtocolError("blob length does not match its announcement")
    return message, blob


def send_message(sock: socket.socket, message: dict[str, Any], blob: bytes | None = None) -> None:
    sock.sendall(encode_head(message, blob))
    if blob:
        sock.sendall(blob)


# --- asyncio side (the controller) -------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
    return await reader.readexactly(length)


async def read_message(
    reader: asyncio.StreamReader, limit: int, blob_limit: int
) -> tuple[dict[str, Any], bytes | None]:
    message = decode(await read_frame(reader, limit))
    length = blob_length(message)
    if length is None:
        return message, None
    blob = await read_frame(reader, blob_limit)
    if len(blob) != length:
        raise ProtocolError("blob length does not match its announcement")
    return message, blob
