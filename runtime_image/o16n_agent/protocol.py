"""The controller ⇄ agent wire protocol, version 2. Stdlib only: both ends import this module.

Transport: a Unix stream socket. The controller listens on it in a per-container host
directory mounted read-only into the container; the agent dials in.

Frames: a 4-byte big-endian unsigned length, then that many bytes. A *message* is one
frame holding a UTF-8 JSON object, optionally followed by one more frame of raw bytes
(the *blob*) when the object carries ``"blob": <length>``. Blobs carry what JSON should
not: dill pickles of workspace objects, file contents, workspace tarballs.

Conversation: after connecting, the agent sends ``{"op": "hello", "version": 2, ...}``.
Then the controller sends requests ``{"id": n, "op": ..., ...}`` and the agent answers
each with ``{"id": n, "ok": true, ...}`` or ``{"id": n, "ok": false, "error": ...}``, one
request in flight at a time. Both ends cap frame sizes; the controller also puts a
deadline on every reply and checks its shape, because the agent shares a uid with user
code and is untrusted.

Hello fields: ``version``, ``pid``, ``python`` and, once a session has run a numbered
``execute`` (the controller sends ``"seq": n``, its history number), ``"execution":
{"seq": n, "running": bool}``: the one running now, else the last one. Each ``execute``
also says up to which number the controller has written its history (``"recorded": m``);
the agent keeps the results after that (bounded; the newest always), since the controller
writes its history in batches. The agent dials again at once when the controller goes
away during an execution, so a restarted controller learns that the session is busy; it
then asks ``{"op": "execution_result", "seq": n}`` for each execution it has not recorded,
answered (when the execution ends) with the ``execute`` reply's fields plus ``"code"``.

Interrupts (version 2). While ``execute``, ``execution_result`` or a service's ``run``
runs, the controller may send ``{"id": k, "op": "interrupt"}`` (``k`` a fresh id): the one
message allowed while a request is in flight. The agent raises ``KeyboardInterrupt`` in the
running user code, exactly as ``SIGINT`` does, and acknowledges with ``{"id": k, "ok":
true}`` before the request's reply. An interrupt that reaches the agent after the reply
was sent is dropped, unanswered; so once the reply has arrived, no acknowledgement follows.
The controller falls back to the engine's ``SIGINT`` when no acknowledgement comes soon.

Blobs and memory. The wire format above is all there is; what follows is how each end
reads it, so that neither has to hold a large blob whole:

* The controller reads a reply in steps (``read_length``, then the JSON frame, then
  ``read_blob_length``) and checks each against the request that waits for it before it
  reads on: a frame when no request waits is refused at its 4-byte length, a reply whose
  id is not the waiting request's or whose blob the request did not ask for (or allows
  fewer bytes of) is refused before the blob's first byte. Each request names its own
  blob limit (0: no blob), and says it in the request (``"blob_limit": n``),
  so that an honest agent answers ``code: "too_large"`` instead of sending more (the
  controller would close the link, ending the session). A large blob is then moved in
  pieces of at most ``CHUNK`` bytes into a sink the request supplied (an HTTP response,
  a file), and a large blob the controller sends is read from a file piece by piece
  (``encode_head`` takes the length alone).
* The agent reads a request's head with ``recv_head`` and then either takes the blob
  into memory (``recv_blob``) or hands an ``IncomingBlob`` to the operation, which
  reads it piece by piece (``file_put`` writes it straight to the file); whatever the
  operation left unread is drained before the reply. A reply's blob may be a
  ``FileBlob``: an open file sent with ``sendfile(2)``, never read into the agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from typing import Any

orjson: Any
try:  # the same JSON, faster, where orjson is installed (the controller, the runtime image)
    import orjson
except ImportError:  # pragma: no cover - plain stdlib works too
    orjson = None

VERSION = 2
HEADER = struct.Struct(">I")
#: the pieces a large blob is moved in, at either end
CHUNK = 256 * 1024
#: the largest frame the 4-byte length can announce
MAX_FRAME = (1 << 32) - 1


class ProtocolError(Exception):
    """The peer broke the protocol (bad frame, oversized message, bad JSON)."""


def encode_head(message: dict[str, Any], blob: bytes | int | None = None) -> bytes:
    """``message`` framed for sending, followed (when a ``blob`` goes with it) by the blob's
    length header: the sender writes the blob itself after this, so that a large blob (a
    snapshot's tarball) is never copied into one buffer with its headers. ``blob`` may be
    the blob or only its length (a blob the sender streams from a file)."""
    if blob is None:
        return _frame(dumps(message))
    size = blob if isinstance(blob, int) else len(blob)
    if not 0 <= size <= MAX_FRAME:
        raise ProtocolError(f"a blob of {size} bytes does not fit in one frame")
    return _frame(dumps({**message, "blob": size})) + HEADER.pack(size)


def _frame(data: bytes) -> bytes:
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(data)} bytes is too large")
    return HEADER.pack(len(data)) + data


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


#: frames up to this size are read with one ``recv`` into a buffer of their size, the
#: usual case; larger ones go into a preallocated buffer, piece by piece
SMALL_FRAME = 64 * 1024


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    if n <= SMALL_FRAME:  # almost always all there: no buffer to fill and copy again
        data = sock.recv(n, socket.MSG_WAITALL)
        if len(data) == n:
            return data
        if not data:
            raise EOFError("peer closed the connection")
    buf = bytearray(n)
    got = len(data)
    buf[:got] = data
    view = memoryview(buf)
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


def recv_head(sock: socket.socket, limit: int) -> tuple[dict[str, Any], int | None]:
    """A message without its blob: the message, and the blob's length (``None``: no blob).
    The caller must take the blob next, with ``recv_blob`` or an ``IncomingBlob``."""
    message = decode(recv_frame(sock, limit))
    length = blob_length(message)
    if length is not None:
        (framed,) = HEADER.unpack(recv_exactly(sock, HEADER.size))
        if framed != length:
            raise ProtocolError("blob length does not match its announcement")
    return message, length


def recv_blob(sock: socket.socket, length: int, limit: int) -> bytes:
    """The blob of a head ``recv_head`` returned, whole, in memory (at most ``limit``)."""
    if length > limit:
        raise ProtocolError(f"blob of {length} bytes exceeds the limit of {limit}")
    return recv_exactly(sock, length)


class IncomingBlob:
    """A blob still on the socket, read piece by piece by the operation it belongs to;
    ``drain`` discards what the operation left, keeping the stream in step."""

    def __init__(self, sock: socket.socket, length: int) -> None:
        self._sock = sock
        self.size = length
        self.remaining = length

    def read(self, n: int = CHUNK) -> bytes:
        """Up to ``n`` bytes; ``b""`` once the whole blob was read."""
        n = min(n, self.remaining)
        if n <= 0:
            return b""
        data = self._sock.recv(n)
        if not data:
            raise EOFError("peer closed the connection")
        self.remaining -= len(data)
        return data

    def drain(self) -> None:
        while self.read():
            pass


class FileBlob:
    """A reply's blob that is an open file: ``size`` bytes from its start, sent with
    ``sendfile(2)``. The sender owns ``fd`` and closes it."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def close(self) -> None:
        os.close(self.fd)


def send_message(
    sock: socket.socket,
    message: dict[str, Any],
    blob: bytes | FileBlob | None = None,
    *,
    encoded: bytes | None = None,
) -> None:
    """Send ``message`` and its ``blob``. ``encoded``, when given, is ``dumps(message)``,
    made by a caller that needed it already; it is sent as it is when no blob goes along."""
    if encoded is not None and blob is None:
        sock.sendall(_frame(encoded))
        return
    if isinstance(blob, FileBlob):
        try:
            sock.sendall(encode_head(message, blob.size))
            _send_file(sock, blob)
        finally:
            blob.close()
        return
    sock.sendall(encode_head(message, blob))
    if blob:
        sock.sendall(blob)


def _send_file(sock: socket.socket, blob: FileBlob) -> None:
    """Exactly ``blob.size`` bytes of the file: if it shrank meanwhile (user code writes
    it), the rest is zeros, so the stream stays in step."""
    offset = 0
    while offset < blob.size:
        sent = os.sendfile(sock.fileno(), blob.fd, offset, min(blob.size - offset, 1 << 30))
        if sent == 0:
            break
        offset += sent
    while offset < blob.size:
        pad = min(blob.size - offset, CHUNK)
        sock.sendall(bytes(pad))
        offset += pad


# --- asyncio side (the controller) -------------------------------------------------------


async def read_length(reader: asyncio.StreamReader) -> int:
    """The next frame's 4-byte length (the caller checks it before reading the frame)."""
    (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return int(length)


async def read_blob_length(reader: asyncio.StreamReader, announced: int) -> None:
    """The blob frame's own length, which must be what its message announced."""
    if await read_length(reader) != announced:
        raise ProtocolError("blob length does not match its announcement")


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
