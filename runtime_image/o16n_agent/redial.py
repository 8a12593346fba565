"""Watch the connection while user code runs on the main thread: interrupts and hang-ups.

User code runs on the agent's main thread (``KeyboardInterrupt`` from ``SIGINT`` lands
there, and so does everything user code does with signals), so the main thread can neither
read the controller's ``interrupt`` message nor notice that the controller went away until
the code ends. So while a request runs, a helper thread watches its connection:

* For an interruptible request (``execute``, ``execution_result``, a service's ``run``)
  it reads what the controller sends meanwhile. ``{"op": "interrupt"}`` is the only
  message allowed mid-request: the thread sends ``SIGINT`` to the agent's process (the very
  path the engine's signal takes: ``KeyboardInterrupt`` in user code while it runs, even
  when user code blocks ``SIGINT`` on the main thread) and acknowledges with ``{"id": n,
  "ok": true}``. Anything else is a protocol error: the connection is closed, as when the
  main thread reads one. The acknowledgement always precedes the request's reply: the
  main thread stops the watch, which waits for a message being handled, before it replies;
  an interrupt that arrives after that is read by the main thread between requests and
  dropped (the controller, which got the reply, expects no acknowledgement any more).
* For a session's request it also dials again when the controller hangs up (a restart):
  a restarted controller waits only a bounded time for each agent to say hello, and an
  execution longer than that would be taken for a lost session. Its hello names the
  running execution; the main thread takes the new connection over when the code ends and
  the controller asks for the execution's result on it (``execution_result``). The new
  connection is only watched for a hang-up: its first request is the main thread's.

Exactly one thread writes on a connection at a time: the main thread's replies and this
thread's acknowledgements both take ``send_lock``. This thread reads only between a
request's head (and blob) and its reply, never a request's blob.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable

from o16n_agent import protocol

#: seconds between checks of the watched connection; bounds how late a hang-up is noticed
POLL_INTERVAL = 0.25
MAX_DELAY = 1.0
#: seconds a request runs before its connection is read for an interrupt. Reading at once
#: would wake this thread for the next request of every short one (its poll still holds the
#: connection), and that wake-up competing for the GIL with the main thread cost about
#: 50 µs per request, a third of a short execution's round trip; an interrupt waits at
#: most this long for its acknowledgement instead (the controller allows seconds).
READ_AFTER = 0.1
#: largest message the controller sends mid-request (an ``interrupt`` is a few bytes)
INTERRUPT_LIMIT = 4096


class Redialer:
    """``watch(sock)`` before a request, ``unwatch()`` after it (main thread only)."""

    def __init__(self, dial: Callable[[], socket.socket]) -> None:
        self._dial = dial
        self._cond = threading.Condition()
        #: held by whichever thread writes on a connection (replies, acknowledgements)
        self.send_lock = threading.Lock()
        self._sock: socket.socket | None = None  # the connection being watched
        self._generation = 0  # one per watch(): a stale observation is ignored
        self._redial = True  # dial again when the watched connection hangs up
        self._reading = False  # read interrupts from the watched connection
        self._busy = False  # a message is being read and answered
        self._since = 0.0  # when the watch began (monotonic)
        self._lost = False
        self._dialling = False
        self._idle = False  # the thread waits for a connection to watch: wake it for one
        self._replacement: socket.socket | None = None
        self._thread: threading.Thread | None = None
        #: interrupts received and passed on to the main thread (for tests and logs)
        self.interrupts = 0

    def watch(self, sock: socket.socket, *, redial: bool = True, interrupts: bool = False) -> None:
        with self._cond:
            self._sock = sock
            self._generation += 1
            self._redial, self._reading = redial, interrupts
            self._since = time.monotonic()
            self._lost, self._replacement = False, None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="o16n-redial", daemon=True)
                self._thread.start()
            if self._idle:  # else it polls the connection, and sees the new one after
                self._cond.notify_all()

    def unwatch(self) -> tuple[bool, socket.socket | None]:
        """Stop watching. Returns whether the watched connection was lost and, when the
        controller was dialled again meanwhile, the new connection (hello already sent).
        Waits for a message being handled, so its acknowledgement precedes the reply."""
        with self._cond:
            self._sock = None
            self._generation += 1
            if self._dialling:  # it waits between dials: it stops dialling at once
                self._cond.notify_all()
            while self._dialling or self._busy:  # each ends within a moment
                self._cond.wait()
            lost, replacement = self._lost, self._replacement
            self._lost, self._replacement = False, None
            return lost, replacement

    def _run(self) -> None:
        # SIGINT goes to the process: the kernel gives it to the main thread, or, when user
        # code blocks it there, to a thread that does not, such as this one (whatever mask
        # it inherited); the main thread's handler runs either way, at its next bytecode.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        while True:
            with self._cond:
                while self._sock is None:
                    self._idle = True
                    try:
                        self._cond.wait()
                    finally:
                        self._idle = False
                sock, generation = self._sock, self._generation
                reading = self._reading and self._replacement is None
                early = READ_AFTER - (time.monotonic() - self._since)
            if reading and early > 0:  # a short request ends before anything is read
                reading, timeout = False, early
            else:
                timeout = POLL_INTERVAL
            event = _wait(sock, timeout, reading)
            if event is None:
                continue
            with self._cond:
                if generation != self._generation:
                    continue  # the request ended meanwhile: the main thread handles it
                if event == "readable":
                    self._busy = True
            if event == "readable":
                try:
                    hung_up = not self._answer(sock)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
                if not hung_up:
                    continue
            self._hung_up(sock, generation)

    def _answer(self, sock: socket.socket) -> bool:
        """Read one message mid-request and act on it; ``False`` when the connection is
        gone or broke the protocol (it is then shut down, as the main thread would)."""
        try:
            message, _ = protocol.recv_message(sock, INTERRUPT_LIMIT, 0)
            if message.get("op") != "interrupt":
                raise protocol.ProtocolError(
                    f"{str(message.get('op'))[:40]!r} arrived while a request runs"
                )
            os.kill(os.getpid(), signal.SIGINT)  # as the engine's: to the process
            self.interrupts += 1
            with self.send_lock:
                protocol.send_message(sock, {"id": message.get("id"), "ok": True})
        except (EOFError, OSError, protocol.ProtocolError):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return False
        return True

    def _hung_up(self, sock: socket.socket, generation: int) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self._lost = True
            if not self._redial:
                self._sock = None  # nothing more to watch: the main thread dials when done
                return
            self._dialling = True
        new = None
        try:
            new = self._dial_again(generation)
        finally:
            with self._cond:
                self._dialling = False
                if new is not None:
                    if self._replacement is not None:  # that controller went away too
                        self._replacement.close()
                    self._replacement = new
                    if generation == self._generation:
                        self._sock = new  # watch the new connection in turn
                self._cond.notify_all()

    def _dial_again(self, generation: int) -> socket.socket | None:
        delay = 0.05
        while True:
            try:
                return self._dial()
            except OSError:
                pass
            with self._cond:
                if generation == self._generation:
                    self._cond.wait(delay)
                if generation != self._generation:
                    return None  # the main thread dials from here on
            delay = min(delay * 2, MAX_DELAY)


def _wait(sock: socket.socket, timeout: float, reading: bool) -> str | None:
    """Wait up to ``timeout`` seconds for the peer: ``"hung_up"`` when it closed ``sock``
    (or it broke), ``"readable"`` when it sent something and ``reading``, else ``None``.
    Without ``reading``, pending data does not count: only a hang-up wakes the poll."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLRDHUP | (select.POLLIN if reading else 0))
        events = poller.poll(timeout * 1000)
    except (OSError, ValueError):  # closed under us: the next look sees it is not watched
        time.sleep(timeout)
        return None
    if not events:
        return None
    mask = events[0][1]
    if reading and mask & select.POLLIN:
        return "readable"  # a hang-up after the data shows as the end of the stream
    return "hung_up"
