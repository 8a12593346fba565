"""The agent's connection loop: dial the controller, say hello, answer requests one by one.

User code runs in this process, so the loop guards against what it may do: ``fork``
(a child that returns here exits at once instead of answering on the shared socket),
``SIGINT`` outside an execution (ignored), and exceptions of every kind (reported in the
reply, never fatal).

While a request runs, a helper thread (``redial``) watches the connection: during an
execution or a service's request it reads the controller's ``interrupt`` (``SIGINT`` to
the process, acknowledged), and during a session's request, if the controller goes away
(a restart), it dials again at once and says which execution runs, so the restarted
controller adopts the session as busy and asks for the result later.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from o16n_agent import codec, protocol
from o16n_agent.errors import OpError
from o16n_agent.execution import REPLY_MAX
from o16n_agent.realtime import RealtimeOps
from o16n_agent.redial import Redialer
from o16n_agent.service import ServiceOps
from o16n_agent.session import SessionOps

Reply = tuple[dict[str, Any], bytes | protocol.FileBlob | None]
#: a reply, its blob, and its JSON when it goes without a blob (encoded once, when checked)
Answer = tuple[dict[str, Any], bytes | protocol.FileBlob | None, bytes | None]
Handler = Callable[[dict[str, Any], Any], Reply]

#: the ``SIGINT`` handler as stored: ``signal.getsignal`` turns ``SIG_DFL``/``SIG_IGN`` into
#: enum members, an enum lookup that cost about 5 µs, twice per request
_stored_handler: Callable[[int], Any] = importlib.import_module("_signal").getsignal

#: largest request the agent accepts from the controller
REQUEST_LIMIT = 64 << 20
BLOB_LIMIT = 4 << 30
DIAL_TIMEOUT = 5.0
#: operations that read their request's blob piece by piece (an ``IncomingBlob``)
#: instead of in memory: an uploaded file goes straight to disk
STREAMED_IN = frozenset({"file_put"})
#: operations that run user code, or score a model: the controller may send ``interrupt``
#: while they run
INTERRUPTIBLE = frozenset({"execute", "execution_result", "run", "score"})


class Agent:
    def __init__(self, socket_path: str, workdir: str) -> None:
        self.socket_path = socket_path
        self.pid = os.getpid()
        self.executing = False
        #: the ``SIGINT`` handler user code found when it started, put back when it ends
        self._sigint_before: Any = None
        self.started = time.time()
        self.handlers: dict[str, Handler] = {"ping": self._ping, "preload": self._preload}
        self.session = SessionOps(workdir, self._set_executing)
        self.service = ServiceOps(workdir, self._set_executing)
        self.realtime = RealtimeOps(self._set_executing)
        self.handlers.update(self.session.handlers())
        self.handlers.update(self.service.handlers())
        self.handlers.update(self.realtime.handlers())
        #: per operation, the result that replaces an answer too large to send (else an
        #: error: the controller's 500)
        self.shrinkers = self.realtime.shrinkers()
        self.redialer = Redialer(self._connect)
        #: a session's requests: the connection is watched while they run and dialled again
        #: if it drops, so that a long one never makes a restarted controller give up on the
        #: session (an execution's result is kept for it: ``execution_result``)
        self.redialled = frozenset(self.session.handlers())

    def _set_executing(self, running: bool) -> None:
        """Whether user code runs now: ``SIGINT`` is its ``KeyboardInterrupt`` only then.
        When it ends, the ``SIGINT`` handler it found is put back (as ipykernel does): one it
        installed and left (``default_int_handler``, say) would make a late interrupt (one
        crossing the reply, the engine's fallback) raise in the agent, and end it."""
        if running:
            self._sigint_before = _stored_handler(signal.SIGINT)
            self.executing = True
            return
        self.executing = False
        before, self._sigint_before = self._sigint_before, None
        if before is not None and _stored_handler(signal.SIGINT) is not before:
            with contextlib.suppress(ValueError):  # not the main thread (some tests)
                signal.signal(signal.SIGINT, before)

    # --- lifecycle ------------------------------------------------------------------------

    def serve_forever(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        delay = 0.05
        while True:
            try:
                sock = self._connect()
            except OSError:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.05
            self._serve(sock)

    def _connect(self) -> socket.socket:
        """Dial the controller and say hello (from the main thread or the redialer's)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(DIAL_TIMEOUT)  # a listener whose backlog is full never blocks us
            sock.connect(self.socket_path)
            protocol.send_message(sock, self._hello())
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock

    def _hello(self) -> dict[str, Any]:
        hello = {
            "op": "hello",
            "version": protocol.VERSION,
            "pid": self.pid,
            "python": sys.version.split()[0],
        }
        execution = self.session.execution_state()
        if execution is not None:
            hello["execution"] = execution
        return hello

    def _serve(self, sock: socket.socket) -> None:
        """Answer requests until the controller goes away. When it went away during a
        session's request and the redialer reached a controller again, go on there: the
        reply is dropped (an execution's is kept: the new controller asks for it).

        An ``interrupt`` read here, between requests, came too late: the request it was
        for has been answered, and the controller expects nothing for it. It is dropped."""
        try:
            while True:
                message, blob = self._receive(sock)
                op = message.get("op")
                if op == "interrupt" and blob is None:
                    continue
                redial, interrupts = op in self.redialled, op in INTERRUPTIBLE
                if not (redial or interrupts):
                    reply, reply_blob, encoded = self._handle(message, blob)
                else:
                    self.redialer.watch(sock, redial=redial, interrupts=interrupts)
                    try:
                        reply, reply_blob, encoded = self._handle(message, blob)
                    finally:
                        lost, replacement = self.redialer.unwatch()
                    if replacement is not None or lost:
                        _drop(reply_blob)  # the reply is dropped: its file with it
                    if replacement is not None:
                        sock.close()
                        sock = replacement
                        continue
                    if lost:
                        return
                with self.redialer.send_lock:
                    protocol.send_message(sock, reply, reply_blob, encoded=encoded)
        except (EOFError, OSError, protocol.ProtocolError):
            pass  # the controller went away: dial again
        finally:
            sock.close()

    def _receive(self, sock: socket.socket) -> tuple[dict[str, Any], Any]:
        """A request and its blob: in memory, or (``STREAMED_IN``) still on the socket."""
        message, length = protocol.recv_head(sock, REQUEST_LIMIT)
        if length is None:
            return message, None
        if message.get("op") in STREAMED_IN:
            return message, protocol.IncomingBlob(sock, length)
        return message, protocol.recv_blob(sock, length, BLOB_LIMIT)

    def _handle(self, message: dict[str, Any], blob: Any) -> Answer:
        """``answer``, then what the operation left unread of a streamed blob is read and
        dropped, so the stream stays in step (a broken connection shows when replying)."""
        reply = self.answer(message, blob)
        if isinstance(blob, protocol.IncomingBlob):
            with contextlib.suppress(EOFError, OSError):
                blob.drain()
        return reply

    # --- dispatch -------------------------------------------------------------------------

    def handle(self, message: dict[str, Any], blob: Any) -> Reply:
        """Run one request; always returns a reply, whatever the handler did."""
        reply, out_blob, _ = self.answer(message, blob)
        return reply, out_blob

    def answer(self, message: dict[str, Any], blob: Any) -> Answer:
        """``handle``, with the reply's JSON as its size was checked on (no blob)."""
        request_id = message.get("id")
        op = message.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        try:
            if handler is None:
                raise OpError(f"unknown operation {op!r}")
            result, out_blob = handler(message, blob)
            _check_blob_limit(message, out_blob)
            reply: dict[str, Any] = {"id": request_id, "ok": True, **result}
        except OpError as exc:
            reply = {"id": request_id, "ok": False, "error": str(exc), "code": exc.code}
            out_blob = None
        except BaseException as exc:
            self.exit_if_forked()
            if isinstance(exc, SystemExit | KeyboardInterrupt):
                text = f"{type(exc).__name__} outside user code"
            else:
                try:
                    text = "".join(traceback.format_exception(exc))
                except BaseException:  # an exception of user code's, whose methods raise
                    text = codec.describe(exc)
            reply, out_blob = {"id": request_id, "ok": False, "error": text}, None
        if self.executing:  # a SIGINT's handler ran as user code ended, before it was told
            self.executing = False  # first: no call (a point where handlers run) before it
            self._set_executing(False)
        self.exit_if_forked()
        reap_children()
        return checked(reply, out_blob, self.shrinkers.get(op) if isinstance(op, str) else None)

    def exit_if_forked(self) -> None:
        """A process forked by user code must never answer on the agent's socket."""
        if os.getpid() != self.pid:
            os._exit(0)

    def _on_sigint(self, signum: int, frame: object) -> None:
        if self.executing:
            raise KeyboardInterrupt

    # --- operations -----------------------------------------------------------------------

    def _ping(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        return {"pong": True, "uptime": time.time() - self.started}, None

    def _preload(self, message: dict[str, Any], blob: bytes | None) -> Reply:
        """Import modules ahead of use (a warm container for services does this while it
        waits), so restoring a workspace later only has to unpickle."""
        started = time.perf_counter()
        loaded, failed = [], {}
        for name in message.get("modules") or []:
            if not isinstance(name, str):
                continue
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception as exc:  # a module missing from the image is not fatal
                failed[name] = f"{type(exc).__name__}: {exc}"[:200]
        return {"loaded": loaded, "failed": failed, "seconds": time.perf_counter() - started}, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="o16n_agent")
    parser.add_argument("--socket", required=True, help="controller's Unix socket to dial")
    parser.add_argument("--workdir", required=True, help="working directory of user code")
    args = parser.parse_args(argv)
    os.chdir(args.workdir)
    Agent(args.socket, args.workdir).serve_forever()
    return 0


def sendable(reply: dict[str, Any], blob: bytes | protocol.FileBlob | None) -> Reply:
    """``reply`` as it can go on the wire. The operations make replies the controller can
    read; this is the last guard, because an error while writing one would end the agent:
    strings that are not valid UTF-8 (a file name, a message) are escaped, and a reply that
    still cannot be written, or is larger than the controller reads, becomes an error."""
    reply, blob, _ = checked(reply, blob)
    return reply, blob


def checked(
    reply: dict[str, Any],
    blob: bytes | protocol.FileBlob | None,
    shrink: Callable[[dict[str, Any], int, int], dict[str, Any]] | None = None,
) -> Answer:
    """``sendable``, and the reply's JSON when it goes without a blob: the encoding its
    size was checked on is the one sent, not made again (an output of megabytes). An
    answer too large becomes ``shrink(reply, size, limit)``'s result when the operation
    has one."""
    try:
        data = protocol.dumps(reply)
    except Exception:
        try:
            reply = _clean(reply)
            data = protocol.dumps(reply)
        except Exception as exc:
            why = f"the agent's reply cannot be written as JSON: {codec.describe(exc)}"
            _drop(blob)
            return _failed(reply, why)
    if len(data) > REPLY_MAX - 64:  # the frame also carries the blob's length, when any
        _drop(blob)
        if shrink is not None and reply.get("ok") is True:
            small = {"id": reply.get("id"), "ok": True, **shrink(reply, len(data), REPLY_MAX - 64)}
            return small, None, protocol.dumps(small)
        why = f"the agent's reply takes {len(data):,} bytes, more than the {REPLY_MAX:,} allowed"
        return _failed(reply, why)
    return reply, blob, data if blob is None else None


def _failed(reply: dict[str, Any], why: str) -> Answer:
    failed = {"id": reply.get("id"), "ok": False, "error": why}
    return failed, None, protocol.dumps(failed)


def _drop(blob: bytes | protocol.FileBlob | None) -> None:
    if isinstance(blob, protocol.FileBlob):
        blob.close()


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return codec.clean_text(value)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _check_blob_limit(message: dict[str, Any], blob: bytes | protocol.FileBlob | None) -> None:
    """Refuse (``too_large``) a reply blob over the request's ``blob_limit``: the controller
    would refuse it at its head and close the link, which would end the session."""
    limit = message.get("blob_limit")
    if blob is None or not isinstance(limit, int) or isinstance(limit, bool):
        return  # no limit named: the controller's own check is the one that counts
    size = blob.size if isinstance(blob, protocol.FileBlob) else len(blob)
    if size > limit:
        if isinstance(blob, protocol.FileBlob):
            blob.close()
        raise OpError(f"the result is {size} bytes, more than the limit of {limit}", "too_large")


#: seconds between looks for exited children when no fork was seen since the last look: a
#: child forked without Python's hooks (``ctypes``' ``fork``) is reaped within this
REAP_INTERVAL = 1.0


class _Children:
    """Whether a look for exited children is due. Looking costs a ``waitpid`` that raises
    ``ChildProcessError`` when there are none, about 8 µs a request; so the agent looks
    after a fork (``os.fork``'s hook), while children it saw live on, and otherwise once
    every :data:`REAP_INTERVAL`."""

    def __init__(self) -> None:
        self.due = True
        self.next_look = 0.0

    def forked(self) -> None:
        self.due = True


_children = _Children()
os.register_at_fork(after_in_parent=_children.forked)


def reap_children() -> None:
    """Collect exited children of the agent (forks of user code, in a session or a service),
    so that no zombie holds a pid."""
    now = time.monotonic()
    if not _children.due and now < _children.next_look:
        return
    _children.next_look = now + REAP_INTERVAL
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            _children.due = False
            return
        if pid == 0:  # children live on: look again after the next request
            _children.due = True
            return
