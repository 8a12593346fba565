"""The controller's end of the agent protocol: a listener per container and the link to its agent.

The controller owns the listening socket, in a per-container host directory that is
mounted read-only into the container, so code in the container can neither replace the
socket nor plant a symlink the controller would follow. The agent shares a uid with user
code, so every reply is treated as hostile: size caps, a deadline, an id and shape check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

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

Reply = tuple[dict[str, Any], bytes | None]


class AgentTimeout(RuntimeFailure):
    """The agent did not answer in time; the link is closed."""


class AgentLink:
    """A connected agent. One request in flight at a time (callers queue on a lock).

    A reader task owned by the link takes every reply off the socket as it arrives and
    hands it to the waiting call, so an agent that dies is noticed at once, and a call
    costs no task of its own.
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
        self._waiter: asyncio.Future[Any] | None = None
        self._late: Reply | None = None
        self._reader_task = asyncio.get_running_loop().create_task(
            self._read_replies(), name="agent-link-reader"
        )

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Close the connection; a call waiting for a reply gets ``AgentGone``."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._writer.transport.abort()  # never wait on an agent to drain what we sent
        self._fail_waiter(AgentGone("the agent's connection is closed"))
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

    async def _read_replies(self) -> None:
        error: Exception
        try:
            while True:
                reply = await protocol.read_message(
                    self._reader, self._reply_limit, self._blob_limit
                )
                waiter = self._waiter
                if waiter is None:
                    error = AgentProtocolError("the agent sent a reply nobody asked for")
                    break
                if waiter.done():  # its deadline passed a moment ago: keep it for the caller
                    self._late = reply
                else:
                    waiter.set_result(reply)
        except (ConnectionError, asyncio.IncompleteReadError, EOFError):
            error = AgentGone("the agent's connection ended")
        except protocol.ProtocolError as exc:
            error = AgentProtocolError(f"the agent broke the protocol: {exc}")
        except Exception as exc:  # the agent is untrusted: whatever it sends, tell the caller
            error = AgentProtocolError(f"the agent's reply could not be read: {exc!r}")
        self._fail_waiter(error)
        self.close()

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        blob: bytes | None = None,
        timeout: float,
        on_timeout: Callable[[], Awaitable[None]] | None = None,
        grace: float = 5.0,
    ) -> Reply:
        """Send one request and return the agent's reply (fields and blob).

        When ``timeout`` passes, ``on_timeout`` (for example: send SIGINT) runs and the
        reply gets ``grace`` seconds more. A link whose reply never came is closed: its
        byte stream is no longer in step. The deadline is a plain timer on the reply's
        future: this is the consume path, and it costs no task and no extra future.
        """
        async with self._lock:
            if self.closed:
                raise AgentGone("the agent's connection is closed")
            request_id = self._next_id
            self._next_id += 1
            self._late = None
            try:
                self._writer.write(
                    protocol.encode_head({**(args or {}), "id": request_id, "op": op}, blob)
                )
                if blob:
                    self._writer.write(blob)
                await self._writer.drain()
                result = await self._await_reply(timeout)
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
            except BaseException:
                self.close()
                raise
            finally:
                self._waiter = None
            reply, reply_blob = result
        if reply.get("id") != request_id or not isinstance(reply.get("ok"), bool):
            self.close()
            raise AgentProtocolError("the agent's reply does not match its request")
        if not reply["ok"]:
            raise _agent_error(reply)
        return reply, reply_blob

    def _new_waiter(self) -> asyncio.Future[Any]:
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        return waiter

    async def _await_reply(self, timeout: float, waiter: asyncio.Future[Any] | None = None) -> Any:
        """The reply, or ``_EXPIRED`` once ``timeout`` seconds have passed."""
        waiter = waiter or self._new_waiter()
        timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()


_EXPIRED = object()


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


class AgentListener:
    """Listens on ``<socket_dir>/agent.sock`` for one container's agent.

    Keeps listening for the container's lifetime, so an agent can dial in again after a
    controller restart; while a link is open, further connections are refused.

    The listener owns its socket and accepts in a reader callback rather than through
    ``asyncio.start_unix_server``: on Python 3.11 a connection that server accepted just
    before ``Server.close()`` fails an assertion half-way through building its transport,
    and that transport is never closed. Here a connection is ours the moment it is
    accepted, so ``close()`` can always close it.
    """

    def __init__(self, socket_dir: Path, reply_limit: int, blob_limit: int) -> None:
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / SOCKET_NAME
        self._reply_limit = reply_limit
        self._blob_limit = blob_limit
        self._sock: socket.socket | None = None
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
            task = asyncio.get_running_loop().create_task(self._handshake(conn))
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
            reader, writer = await asyncio.open_unix_connection(sock=conn)
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
