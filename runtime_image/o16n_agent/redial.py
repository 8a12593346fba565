"""Dial the controller again while user code runs on the main thread.

User code runs on the agent's main thread (``KeyboardInterrupt`` from ``SIGINT`` lands
there, and so does everything user code does with signals), so the main thread cannot
notice that the controller went away until the code ends. A restarted controller waits
only a bounded time for each agent to say hello; an execution longer than that would be
taken for a lost session. So while an execution runs, a helper thread watches the
connection, and when the controller hangs up it dials again and says hello (its hello
names the running execution). The main thread takes that new connection over when the
code ends; the controller asks for the execution's result on it (``execution_result``).

The helper thread never reads a request and never answers one: exactly one thread talks
on a connection at a time.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable

#: seconds between checks of the watched connection; bounds how late a hang-up is noticed
POLL_INTERVAL = 0.25
MAX_DELAY = 1.0


class Redialer:
    """``watch(sock)`` before an execution, ``unwatch()`` after it (main thread only)."""

    def __init__(self, dial: Callable[[], socket.socket]) -> None:
        self._dial = dial
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None  # the connection being watched
        self._generation = 0  # one per watch(): a stale observation is ignored
        self._lost = False
        self._dialling = False
        self._replacement: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket) -> None:
        with self._cond:
            self._sock = sock
            self._generation += 1
            self._lost, self._replacement = False, None
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="o16n-redial", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def unwatch(self) -> tuple[bool, socket.socket | None]:
        """Stop watching. Returns whether the watched connection was lost and, when the
        controller was dialled again meanwhile, the new connection (hello already sent)."""
        with self._cond:
            self._sock = None
            self._generation += 1
            self._cond.notify_all()
            while self._dialling:  # a dial in progress ends within one connect attempt
                self._cond.wait()
            lost, replacement = self._lost, self._replacement
            self._lost, self._replacement = False, None
            return lost, replacement

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._sock is None:
                    self._cond.wait()
                sock, generation = self._sock, self._generation
            if not _hung_up(sock, POLL_INTERVAL):
                continue
            with self._cond:
                if generation != self._generation:
                    continue  # the execution ended meanwhile: the main thread handles it
                self._lost, self._dialling = True, True
            new = None
            try:
                new = self._redial(generation)
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

    def _redial(self, generation: int) -> socket.socket | None:
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


def _hung_up(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closed ``sock`` (or it broke), waiting up to ``timeout`` seconds.
    Pending data does not count: only a hang-up or an error wakes the poll."""
    poller = select.poll()
    try:
        poller.register(sock, select.POLLRDHUP)
        return bool(poller.poll(timeout * 1000))
    except (OSError, ValueError):  # closed under us: the next look sees it is not watched
        time.sleep(timeout)
        return False
