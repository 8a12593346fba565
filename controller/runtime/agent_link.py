"""The controller's end of the agent protocol: a listener per container and the link to its agent.

The controller owns the listening socket, in a per-container host directory that is
mounted read-only into the container, so code in the container can neither replace the
socket nor plant a symlink the controller would follow. The agent shares a uid with user
code, so every reply is treated as hostile: size caps, a deadline, an id and shape check.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from o16n_agent import protocol

from controller.errors import (
    AgentGone,
    AgentProtocolError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RuntimeFailure,
)

log = logging.getLogger(__name__)

SOCKET_NAME = "agent.sock"
#: longest path a Unix socket may have on Linux (sun_path is 108 bytes, NUL-terminated)
MAX_SOCKET_PATH = 107
HELLO_TIMEOUT = 10.0
LISTEN_BACKLOG = 8
#: seconds to wait before accepting again after accept(2) failed (out of descriptors)
ACCEPT_RETRY_DELAY = 1.0
#: bytes the link's reader buffers ahead of its reader task, at most about twice this
READ_BUFFER = protocol.CHUNK
#: largest blob a call may take into memory; larger ones go to a sink piece by piece
IN_MEMORY_MAX = 16 << 20
#: the language the agent runs: ML Server's ``runtimeType`` of sessions, snapshots, services
RUNTIME = "Python"
#: seconds for workspace, file and snapshot operations
AGENT_TIMEOUT = 120.0
#: the largest request message the agent reads (``o16n_agent.agent.REQUEST_LIMIT``): one
#: over it ends the agent's connection, so callers refuse such a request first
AGENT_REQUEST_MAX = 64 << 20


def message_size(args: dict[str, Any]) -> int:
    """Bytes of a request's fields as the link writes them (JSON numbers written again
    may take several times the bytes they came in: ``1e15`` is ``1000000000000000.0``)."""
    return len(protocol.dumps(args))


Reply = tuple[dict[str, Any], bytes | None]
#: requests that run user code, which an ``interrupt`` message may stop (protocol v2)
INTERRUPTIBLE = frozenset({"execute", "execution_result", "run", "score"})
#: what ``AgentLink.interrupt`` found: the agent acknowledged; no interruptible request was
#: in flight (or it was answered meanwhile); or the agent did not answer in time
Interrupted = Literal["acknowledged", "idle", "silent"]


class AgentTimeout(RuntimeFailure):
    """The agent did not answer in time; the link is closed."""


class BlobSink(Protocol):
    """Where a call's reply blob goes, piece by piece: ``start`` once its length is known
    (the reply's head was checked), then ``write`` for each piece, awaited before the
    next piece is read (backpressure all the way to the agent)."""

    async def start(self, size: int) -> None: ...

    async def write(self, chunk: bytes) -> None: ...


class BlobSource(Protocol):
    """A request blob sent piece by piece: its ``size`` is announced first, then exactly
    that many bytes must come from ``read``."""

    size: int

    async def read(self, n: int) -> bytes: ...


class SinkFailed(Exception):
    """A call's sink raised (an HTTP client went away, a disk filled up): the rest of the
    blob was read and dropped, the link is fine. ``error`` is what the sink raised."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
        self.__cause__ = error  # errors.translate follows it: a full disk is still a 507


@dataclass(eq=False)
class _Call:
    """The request in flight: what its reply may be, checked before the reply is read."""

    id: int
    op: str
    blob_limit: int
    sink: BlobSink | None
    idle: float
    sink_error: BaseException | None = None
    #: the reply's head was accepted and its blob is moving into the sink
    streaming: bool = False
    #: the request is on the wire whole: an ``interrupt`` may follow it
    sent: bool = False
    #: the caller's context: what the reader logs about this call carries its request id
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class AgentLink:
    """A connected agent. One request in flight at a time (callers queue on a lock).

    A reader task owned by the link takes every reply off the socket as it arrives and
    hands it to the waiting call, so an agent that dies is noticed at once, and a call
    costs no task of its own. The reader checks each reply against the call in flight
    before reading it: a frame when no call waits is refused at its length, a reply
    with the wrong id or a blob the call did not ask for (or larger than it allows) at
    its head, before the blob; each refusal closes the link. A blob bound for a sink is
    moved piece by piece, so no reply is ever held whole unless the call asked for a
    small one in memory.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: dict[str, Any],
        reply_limit: int,
        blob_limit: int,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.hello = hello
        self._reply_limit = reply_limit
        self._blob_limit = blob_limit
        self._lock = asyncio.Lock()
        self._next_id = 1
        self._closed = asyncio.Event()
        self._call: _Call | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._late: Reply | None = None
        #: set once the blob of a call whose caller left has been read and dropped
        self._drained: asyncio.Event | None = None
        #: why the link closed, when the agent broke it (reported to later calls)
        self.failure: AgentProtocolError | None = None
        #: the id of the ``interrupt`` sent during the call in flight, and its acknowledgement
        self._interrupt: tuple[int, asyncio.Future[bool]] | None = None
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_replies(), name="agent-link-reader"
        )

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def blob_limit(self) -> int:
        """The most any call may accept (``O16N_AGENT_BLOB_MAX_BYTES``)."""
        return self._blob_limit

    def close(self) -> None:
        """Close the connection; a call waiting for a reply gets ``AgentGone``."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._drained is not None:
            self._drained.set()  # a call waiting for it finds the link closed
        self._writer.transport.abort()  # never wait on an agent to drain what we sent
        self._fail_waiter(AgentGone("the agent's connection is closed"))
        self._settle_interrupt()
        if self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()

    async def aclose(self) -> None:
        """Close, and wait until the reader task and the socket are done."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(5.0):
                await self._writer.wait_closed()

    def _fail_waiter(self, error: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
            waiter.exception()  # mark retrieved: the caller may already have given up

    def _gone(self) -> Exception:
        if self.failure is not None:
            return AgentProtocolError(self.failure.message)
        return AgentGone("the agent's connection is closed")

    async def _read_replies(self) -> None:
        error: Exception
        try:
            while True:
                read = await self._read_reply()
                if read is None:
                    continue  # an interrupt's acknowledgement
                call, reply = read
                self._settle_interrupt()  # its reply came: no acknowledgement follows
                waiter = self._waiter
                if self._call is not call:
                    pass  # its caller left while the blob streamed: dropped
                elif waiter is None or waiter.done():
                    # its deadline passed a moment ago: keep it for the caller
                    self._late = reply
                else:
                    waiter.set_result(reply)
                drained, self._drained = self._drained, None
                if drained is not None:
                    drained.set()
        except (ConnectionError, asyncio.IncompleteReadError, EOFError):
            error = AgentGone("the agent's connection ended")
        except protocol.ProtocolError as exc:
            error = self.failure = AgentProtocolError(f"the agent broke the protocol: {exc}")
            in_flight = self._call
            context = in_flight.context if in_flight is not None else contextvars.Context()
            context.run(log.warning, "agent link closed", extra={"reason": error.message[:300]})
        except AgentTimeout as exc:
            error = exc
        except Exception as exc:  # the agent is untrusted: whatever it sends, tell the caller
            error = self.failure = AgentProtocolError(
                f"the agent's reply could not be read: {exc!r}"
            )
        self._fail_waiter(error)
        self.close()

    async def _read_reply(self) -> tuple[_Call, Reply] | None:
        """One reply, checked against the call in flight before each part is read, and
        that call; ``None`` for the acknowledgement of an interrupt."""
        reader = self._reader
        length = await protocol.read_length(reader)
        call = self._call
        if call is None:
            raise protocol.ProtocolError("a frame arrived when no request was waiting for one")
        if length > self._reply_limit:
            raise protocol.ProtocolError(
                f"frame of {length} bytes exceeds the limit of {self._reply_limit}"
            )
        message = protocol.decode(await reader.readexactly(length))
        pending = self._interrupt
        if pending is not None and message.get("id") == pending[0]:
            if message.get("ok") is not True or "blob" in message:
                raise protocol.ProtocolError("the agent's answer to an interrupt is malformed")
            self._settle_interrupt(True)
            return None
        if message.get("id") != call.id:
            raise protocol.ProtocolError(
                f"a reply with id {str(message.get('id'))[:40]} arrived while request "
                f"{call.id} ({call.op}) was waiting"
            )
        size = protocol.blob_length(message)
        if size is None:
            return call, (message, None)
        if call.blob_limit <= 0:
            raise protocol.ProtocolError(f"a reply to {call.op} carries a blob, which it may not")
        if size > call.blob_limit:
            raise protocol.ProtocolError(
                f"a reply to {call.op} announces a blob of {size} bytes; "
                f"it may carry at most {call.blob_limit}"
            )
        if message.get("ok") is not True:
            raise protocol.ProtocolError("an error reply carries a blob")
        await protocol.read_blob_length(reader, size)
        if call.sink is None:
            return call, (message, await reader.readexactly(size))
        waiter = self._waiter
        if waiter is None or waiter.done():  # too late to stream it: the call gave up
            raise AgentTimeout(f"the agent answered {call.op} after its deadline")
        if self._timer is not None:  # the agent answered; from here on, idle limits apply
            self._timer.cancel()
        call.streaming = True
        await self._stream(call, call.sink, size)
        return call, (message, None)

    async def _stream(self, call: _Call, sink: BlobSink, size: int) -> None:
        """Move ``size`` bytes into ``sink``, one read and one write at a time. When the
        sink fails, the rest is read and dropped: the link stays in step."""
        reader = self._reader
        remaining = size
        try:
            async with asyncio.timeout(call.idle):
                await sink.start(size)
        except Exception as exc:  # the client or the disk, not the agent
            call.sink_error = exc
        while remaining:
            try:
                async with asyncio.timeout(call.idle):
                    chunk = await reader.read(min(remaining, protocol.CHUNK))
            except TimeoutError:
                raise AgentTimeout(
                    f"the agent sent nothing of {call.op}'s blob for {call.idle:g} s"
                ) from None
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
            if call.sink_error is None:
                try:
                    async with asyncio.timeout(call.idle):
                        await sink.write(chunk)
                except Exception as exc:  # the client or the disk, not the agent
                    call.sink_error = exc

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        blob: bytes | BlobSource | None = None,
        timeout: float,
        on_timeout: Callable[[], Awaitable[None]] | None = None,
        grace: float = 5.0,
        blob_limit: int = 0,
        sink: BlobSink | None = None,
    ) -> Reply:
        """Send one request and return the agent's reply (fields and blob).

        ``blob`` goes with the request: bytes, or a ``BlobSource`` sent piece by piece.
        The reply may carry a blob of at most ``blob_limit`` bytes (0: none); it goes into
        ``sink`` as it arrives (the reply then has no blob), or without a sink into memory
        (small limits only). The agent is told the limit (``blob_limit`` in the request),
        so an honest agent answers ``too_large`` rather than sending more.

        When ``timeout`` passes before the reply's head, ``on_timeout`` (for example: send
        SIGINT) runs and the reply gets ``grace`` seconds more; a blob streaming into a
        sink is held to ``timeout`` between pieces instead. A link whose reply never came
        is closed: its byte stream is no longer in step. The deadline is a plain timer on
        the reply's future: this is the consume path, and it costs no task and no extra
        future. A failed sink raises what it raised, and the link stays open.
        """
        limit = min(blob_limit, self._blob_limit)
        if sink is None and limit > IN_MEMORY_MAX:
            raise ValueError(f"a blob of up to {limit} bytes needs a sink")
        message = {**(args or {}), "id": 0, "op": op}
        if limit > 0:
            message["blob_limit"] = limit
        async with self._lock:
            if self._drained is not None:  # a blob whose caller left is still arriving
                await self._wait_drained(timeout)
            if self.closed:
                raise self._gone()
            request_id = self._next_id
            self._next_id += 1
            message["id"] = request_id
            self._late = None
            call = _Call(request_id, op, limit, sink, timeout)
            self._call = call
            waiter = self._new_waiter()
            try:
                if isinstance(blob, bytes | None):
                    writer = self._writer
                    writer.write(protocol.encode_head(message, blob))
                    if blob:
                        writer.write(blob)
                    if writer.transport.get_write_buffer_size():  # else it all went out
                        await writer.drain()
                else:
                    await self._send_source(message, blob, timeout)
                call.sent = True
                result = await self._await_reply(timeout, waiter)
                if result is _EXPIRED and self._late is None and on_timeout is not None:
                    waiter = self._new_waiter()
                    await on_timeout()
                    result = (
                        waiter.result() if waiter.done() else await self._await_reply(grace, waiter)
                    )
                if result is _EXPIRED:
                    result = self._late
                if result is None or result is _EXPIRED:
                    raise AgentTimeout(f"the agent did not answer within {timeout:g} s")
            except ConnectionError:
                self.close()
                raise AgentGone("the agent's connection ended") from None
            except asyncio.CancelledError:
                # The caller went away (its HTTP client did) while the reply's blob streams:
                # the reader drops the rest and the next call waits for that, so the link
                # stays in step. Any other time, the stream is out of step: close.
                if _answered(waiter):
                    pass  # the whole reply was read: the link is in step
                elif call.streaming and not self.closed:  # (the cancel cancelled the waiter)
                    call.sink_error = call.sink_error or ConnectionResetError("the caller left")
                    self._drained = asyncio.Event()
                else:
                    self.close()
                raise
            except BaseException:
                self.close()
                raise
            finally:
                self._waiter = None
                self._call = None
                self._settle_interrupt()  # answered: no acknowledgement follows any more
            reply, reply_blob = result
        if not isinstance(reply.get("ok"), bool):
            self.close()
            raise AgentProtocolError("the agent's reply does not match its request")
        if not reply["ok"]:
            raise _agent_error(reply)
        if call.sink_error is not None:
            raise SinkFailed(call.sink_error)
        return reply, reply_blob

    async def interrupt(self, timeout: float) -> Interrupted:
        """Ask the agent to interrupt the request in flight (``KeyboardInterrupt`` in its
        user code) and wait up to ``timeout`` seconds for it to acknowledge. Only a request
        that runs user code (``INTERRUPTIBLE``), sent whole, is interrupted; the message
        goes beside it without the call's lock, which that call holds. No acknowledgement
        follows a reply, so a request answered meanwhile is ``"idle"``."""
        call = self._call
        if call is None or not call.sent or call.op not in INTERRUPTIBLE or self.closed:
            return "idle"
        if self._interrupt is None:
            request_id = self._next_id
            self._next_id += 1
            acknowledged = asyncio.get_running_loop().create_future()
            self._interrupt = (request_id, acknowledged)
            try:
                self._writer.write(protocol.encode_head({"id": request_id, "op": "interrupt"}))
            except (ConnectionError, RuntimeError):
                self._settle_interrupt()
                return "idle"  # the link is going: the call in flight learns why
        acknowledged = self._interrupt[1]
        try:
            async with asyncio.timeout(timeout):
                done = await asyncio.shield(acknowledged)
        except TimeoutError:
            return "silent"
        return "acknowledged" if done else "idle"

    def _settle_interrupt(self, acknowledged: bool = False) -> None:
        pending, self._interrupt = self._interrupt, None
        if pending is not None and not pending[1].done():
            pending[1].set_result(acknowledged)

    async def _wait_drained(self, timeout: float) -> None:
        drained = self._drained
        if drained is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await drained.wait()
        except TimeoutError:
            self.close()
            raise AgentTimeout(
                f"the agent's previous blob did not end within {timeout:g} s"
            ) from None

    async def _send_source(self, message: dict[str, Any], source: BlobSource, idle: float) -> None:
        """The request, then its blob from ``source`` piece by piece, each piece written
        once the socket took the one before (an agent that stops reading times out)."""
        writer = self._writer
        writer.write(protocol.encode_head(message, source.size))
        remaining = source.size
        while remaining:
            chunk = await source.read(min(remaining, protocol.CHUNK))
            if not chunk:
                raise RuntimeFailure(f"the blob for {message['op']} ended {remaining} bytes short")
            chunk = chunk[:remaining]
            remaining -= len(chunk)
            writer.write(chunk)
            try:
                async with asyncio.timeout(idle):
                    await writer.drain()
            except TimeoutError:
                raise AgentTimeout(
                    f"the agent took nothing of {message['op']}'s blob for {idle:g} s"
                ) from None
        await writer.drain()

    def _new_waiter(self) -> asyncio.Future[Any]:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        return waiter

    async def _await_reply(self, timeout: float, waiter: asyncio.Future[Any]) -> Any:
        """The reply, or ``_EXPIRED`` once ``timeout`` seconds have passed (unless the
        reply's blob started streaming meanwhile, which stops the clock)."""
        if waiter.done():
            return waiter.result()
        timer = self._timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._timer = None


_EXPIRED = object()


def _answered(waiter: asyncio.Future[Any]) -> bool:
    """Whether ``waiter`` holds a reply that was read whole."""
    return (
        waiter.done()
        and not waiter.cancelled()
        and waiter.exception() is None
        and waiter.result() is not _EXPIRED
    )


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


def _agent_error(reply: dict[str, Any]) -> Exception:
    message = str(reply.get("error") or "the agent reported an error")[:10_000]
    code = reply.get("code")
    if code == "not_found":
        return NotFoundError(message)
    if code == "invalid":
        return BadRequestError(message)
    if code == "too_large":
        return PayloadTooLargeError(message)
    return RuntimeFailure(message)


def _identity(path: Path) -> tuple[int, int, int]:
    """What tells one socket file from another at the same path (an inode number alone
    may be reused at once for the next file)."""
    status = path.lstat()
    return status.st_dev, status.st_ino, status.st_ctime_ns


def listener(endpoint: str, reply_limit: int, blob_limit: int) -> AgentListener:
    """The listener for a container's agent endpoint (``ContainerHandle.endpoint``); the
    one kind there is: ``unix:<absolute path of the socket>``."""
    scheme, _, address = endpoint.partition(":")
    path = Path(address)
    if scheme != "unix" or not path.is_absolute() or not path.name:
        raise RuntimeFailure(f"unsupported agent endpoint {endpoint[:200]!r}")
    return AgentListener(path.parent, reply_limit, blob_limit, path.name)


class AgentListener:
    """Listens on ``<socket_dir>/agent.sock`` (or ``name``) for one container's agent.

    Keeps listening for the container's lifetime, so an agent can dial in again after a
    controller restart; while a link is open, further connections are refused.

    The listener owns its socket and accepts in a reader callback rather than through
    ``asyncio.start_unix_server``: on Python 3.11 a connection that server accepted just
    before ``Server.close()`` fails an assertion half-way through building its transport,
    and that transport is never closed. Here a connection is ours the moment it is
    accepted, so ``close()`` can always close it.
    """

    def __init__(
        self, socket_dir: Path, reply_limit: int, blob_limit: int, name: str = SOCKET_NAME
    ) -> None:
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / name
        self._reply_limit = reply_limit
        self._blob_limit = blob_limit
        self._sock: socket.socket | None = None
        #: the socket file it bound (device, inode, change time): closing removes it only
        self._inode: tuple[int, int, int] | None = None
        self._closed = False
        self._link: AgentLink | None = None
        self._linked = asyncio.Event()
        self._handshakes: set[asyncio.Task[None]] = set()
        #: accepted connections whose handshake has not finished
        self._pending: set[socket.socket] = set()

    async def start(self) -> None:
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise RuntimeFailure(
                f"socket path {self.socket_path} is longer than {MAX_SOCKET_PATH} bytes; "
                "choose a shorter O16N_DATA_DIR"
            )
        self.socket_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.socket_dir, 0o755)  # noqa: PTH101, S103 (the container's uid must reach the socket)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket of an earlier controller
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            # connect(2) needs write permission on the socket; the container's uid is not ours.
            os.chmod(self.socket_path, 0o666)  # noqa: PTH101, S103
            self._inode = _identity(self.socket_path)  # after the chmod: it sets the ctime
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    async def wait_link(self, timeout: float) -> AgentLink:
        """The agent's link, waiting up to ``timeout`` seconds for it to dial in."""
        while True:
            link = self._link
            if link is not None and not link.closed:
                return link
            self._linked.clear()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                async with asyncio.timeout(timeout):
                    await self._linked.wait()
            except TimeoutError:
                raise AgentGone(f"the agent did not connect within {timeout:g} s") from None

    @property
    def link(self) -> AgentLink | None:
        link = self._link
        return link if link is not None and not link.closed else None

    async def close(self) -> None:
        # Stop accepting first: an agent whose link we are about to cut dials in again at
        # once, and a connection accepted after the sweep below would never be closed.
        self._closed = True
        self._stop_accepting()
        handshakes = list(self._handshakes)
        for task in handshakes:  # each closes its own connection as it ends
            task.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)
        pending, self._pending = list(self._pending), set()
        for conn in pending:  # a handshake cancelled before it ever ran
            conn.close()
        if self._link is not None:
            await self._link.aclose()
        with contextlib.suppress(FileNotFoundError):
            # only our own: another controller of the group that took the session over
            # listens at the same path now (docs/web-nodes.md)
            if _identity(self.socket_path) == self._inode:
                self.socket_path.unlink()

    def _stop_accepting(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def _accept(self) -> None:
        """Take every waiting connection off the socket. A reader callback runs to its end
        before anything else does, so a connection is never half-way between the kernel
        and ``_pending`` when ``close()`` looks."""
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of descriptors, say: try again in a moment
                log.warning("agent socket accept failed", extra={"reason": str(exc)})
                self._pause_accepting()
                return
            conn.setblocking(False)
            self._pending.add(conn)
            # In a context of its own, and so the link it makes and its reader: the listener
            # started in a request's (a session's create), but the link serves later ones.
            task = asyncio.get_running_loop().create_task(
                self._handshake(conn), context=contextvars.Context()
            )
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _pause_accepting(self) -> None:
        if self._sock is None:
            return
        loop = asyncio.get_running_loop()
        fd = self._sock.fileno()
        loop.remove_reader(fd)

        def resume() -> None:
            if self._sock is not None and self._sock.fileno() == fd:
                loop.add_reader(fd, self._accept)

        loop.call_later(ACCEPT_RETRY_DELAY, resume)

    async def _handshake(self, conn: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=conn, limit=READ_BUFFER)
            if self.link is not None:
                raise AgentProtocolError("an agent is already connected")
            async with asyncio.timeout(HELLO_TIMEOUT):
                hello, _ = await protocol.read_message(reader, 64 * 1024, 0)
            if hello.get("op") != "hello" or hello.get("version") != protocol.VERSION:
                raise AgentProtocolError(f"unexpected hello from agent: {str(hello)[:200]}")
        except (Exception, asyncio.CancelledError) as exc:
            if not self._closed:
                log.warning("agent connection refused", extra={"reason": str(exc)[:200]})
            if writer is None:
                conn.close()
            else:
                writer.transport.abort()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()  # closed before close() moves on
            return
        finally:
            self._pending.discard(conn)
        self._link = AgentLink(reader, writer, hello, self._reply_limit, self._blob_limit)
        self._linked.set()
