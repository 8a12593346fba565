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
    """

    def __init__(self, socket_dir: Path, reply_limit: int, blob_limit: int) -> None:
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / SOCKET_NAME
        self._reply_limit = reply_limit
        self._blob_limit = blob_limit
        self._server: asyncio.Server | None = None
        self._link: AgentLink | None = None
        self._linked = asyncio.Event()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._unlinked: set[asyncio.StreamWriter] = set()

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
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        # connect(2) needs write permission on the socket; the container's uid is not ours.
        os.chmod(self.socket_path, 0o666)  # noqa: PTH101, S103

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
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._handshakes):  # before the wait below, so none links meanwhile
            task.cancel()
        if self._link is not None:
            await self._link.aclose()
        unlinked, self._unlinked = list(self._unlinked), set()
        for writer in unlinked:  # accepted, but never handed to a link
            writer.transport.abort()
        for writer in unlinked:
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                async with asyncio.timeout(5.0):
                    await writer.wait_closed()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._unlinked.add(writer)
        task = asyncio.ensure_future(self._handshake(reader, writer))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.link is not None:
                raise AgentProtocolError("an agent is already connected")
            async with asyncio.timeout(HELLO_TIMEOUT):
                hello, _ = await protocol.read_message(reader, 64 * 1024, 0)
            if hello.get("op") != "hello" or hello.get("version") != protocol.VERSION:
                raise AgentProtocolError(f"unexpected hello from agent: {str(hello)[:200]}")
        except (Exception, asyncio.CancelledError) as exc:
            log.warning("agent connection refused", extra={"reason": str(exc)[:200]})
            self._unlinked.discard(writer)
            writer.close()
            return
        self._unlinked.discard(writer)
        self._link = AgentLink(reader, writer, hello, self._reply_limit, self._blob_limit)
        self._linked.set()
