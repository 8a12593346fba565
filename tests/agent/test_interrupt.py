"""Interrupt as a message (protocol v2), against the real agent in this process: the test
plays the controller from a thread while the agent serves on the main thread, where
``SIGINT`` (and so ``KeyboardInterrupt``) lands."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from o16n_agent import protocol
from o16n_agent.agent import Agent

Play = Callable[[socket.socket], None]


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Agent, str]]:
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "agent.sock")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        agent = Agent(path, str(tmp_path))
        signal.signal(signal.SIGINT, agent._on_sigint)
        yield agent, path
    finally:
        signal.signal(signal.SIGINT, previous)


def serve_once(agent: Agent, path: str, play: Play) -> None:
    """Run ``play`` as the controller (in a thread) while the agent answers on this thread
    until ``play`` hangs up."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    failure: list[BaseException] = []

    def controller() -> None:
        conn, _ = listener.accept()
        listener.close()  # an agent that dials again finds no controller
        conn.settimeout(20)
        try:
            hello, _ = protocol.recv_message(conn, 1 << 16, 0)
            assert hello["version"] == protocol.VERSION == 2
            play(conn)
        except BaseException as exc:
            failure.append(exc)
        finally:
            conn.close()

    thread = threading.Thread(target=controller, daemon=True)
    thread.start()
    try:
        agent._serve(agent._connect())
    finally:
        thread.join(20)
        listener.close()
        os.unlink(path)
    if failure:
        raise failure[0]


def receive(conn: socket.socket) -> dict[str, Any]:
    message, _ = protocol.recv_message(conn, 1 << 20, 0)
    return message


def late_sigint_play(code: str, flag: str) -> Play:
    """Run ``code`` (its reply's ``flag`` must be true), then send a late SIGINT, one that
    lands while the agent waits for the next request; that request must be answered as
    usual. One play, so every test of a late SIGINT sends the same one."""

    def play(conn: socket.socket) -> None:
        protocol.send_message(conn, {"id": 1, "op": "execute", "code": code, "seq": 1})
        assert receive(conn)[flag] is True
        os.kill(os.getpid(), signal.SIGINT)  # late: the agent waits for the next request
        threading.Event().wait(0.3)
        protocol.send_message(conn, {"id": 2, "op": "execute", "code": "1 + 1", "seq": 2})
        reply = receive(conn)
        assert reply["id"] == 2 and reply["console"] == "2\n"

    return play


def serve_surviving_sigint(agent: Agent, path: str, play: Play) -> None:
    """``serve_once``, failing the test if a SIGINT raised ``KeyboardInterrupt`` in the
    agent rather than letting it reach pytest, where it would end the whole run."""
    try:
        serve_once(agent, path, play)
    except KeyboardInterrupt:
        pytest.fail("a late SIGINT raised KeyboardInterrupt in the agent")


def test_an_interrupt_message_stops_user_code_and_is_acknowledged_first(
    agent: tuple[Agent, str],
) -> None:
    ag, path = agent

    def play(conn: socket.socket) -> None:
        code = "import time\nprint('started', flush=True)\ntime.sleep(60)"
        protocol.send_message(conn, {"id": 1, "op": "execute", "code": code, "seq": 1})
        threading.Event().wait(0.5)
        protocol.send_message(conn, {"id": 2, "op": "interrupt"})
        assert receive(conn) == {"id": 2, "ok": True}  # before the reply
        reply = receive(conn)
        assert reply["id"] == 1 and reply["ok"] and reply["cancelled"] is True
        assert reply["console"] == "started\n"
        # one that crosses a reply is dropped: the next request's reply comes next
        protocol.send_message(conn, {"id": 3, "op": "interrupt"})
        protocol.send_message(conn, {"id": 4, "op": "execute", "code": "1 + 1", "seq": 2})
        reply = receive(conn)
        assert reply["id"] == 4 and reply["console"] == "2\n"

    serve_once(ag, path, play)
    assert ag.redialer.interrupts == 1


def test_code_that_blocks_sigint_on_its_thread_is_interrupted_all_the_same(
    agent: tuple[Agent, str],
) -> None:
    """User code may block SIGINT on the main thread (a library guarding a critical
    section, say). The engine's SIGINT, sent to the process, still reaches it through a
    thread that does not block it; the interrupt message must too, not wait there pending
    until the code unblocks it (here: after its loop, had it not been interrupted)."""
    ag, path = agent
    code = (
        "import signal, time\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        time.sleep(0.05)\n"
        "    print('not interrupted')\n"
        "finally:\n"
        "    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})\n"
    )

    def play(conn: socket.socket) -> None:
        protocol.send_message(conn, {"id": 1, "op": "execute", "code": code, "seq": 1})
        threading.Event().wait(0.5)
        protocol.send_message(conn, {"id": 2, "op": "interrupt"})
        assert receive(conn) == {"id": 2, "ok": True}
        reply = receive(conn)
        assert reply["id"] == 1 and reply["cancelled"] is True
        assert "not interrupted" not in reply["console"]

    serve_once(ag, path, play)
    assert ag.redialer.interrupts == 1


@pytest.mark.parametrize("handler", ["signal.default_int_handler", "signal.SIG_IGN"])
def test_a_sigint_handler_user_code_leaves_does_not_outlive_it(
    agent: tuple[Agent, str], handler: str
) -> None:
    """User code may install its own SIGINT handler and leave it (``default_int_handler``,
    or a library's, or ``SIG_IGN``). A late interrupt (the engine's fallback signal, one
    crossing the reply) then arrives while the agent, not user code, runs: it must not raise
    ``KeyboardInterrupt`` there, which would end the agent, nor be ignored for good."""
    ag, path = agent
    code = f"import signal\nsignal.signal(signal.SIGINT, {handler})"

    serve_surviving_sigint(ag, path, late_sigint_play(code, "success"))
    assert signal.getsignal(signal.SIGINT) == ag._on_sigint


def test_an_interrupt_landing_as_user_code_ends_leaves_no_trace(agent: tuple[Agent, str]) -> None:
    """A SIGINT's handler runs at the next point the interpreter checks for signals: for
    one arriving as user code ends, that may be the entry of the call that tells the agent
    the code ended, before it takes effect (here a profile hook raises there, as the
    handler would). It is that execution's ``KeyboardInterrupt``; the agent must not go on
    believing user code runs, or the next late SIGINT would raise in the agent itself."""
    ag, path = agent
    code = (
        "import sys\n"
        "def land(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == '_set_executing'"
        " and frame.f_locals.get('running') is False:\n"
        "        sys.setprofile(None)\n"
        "        raise KeyboardInterrupt\n"
        "sys.setprofile(land)\n"
    )

    try:
        serve_surviving_sigint(ag, path, late_sigint_play(code, "cancelled"))
    finally:
        sys.setprofile(None)
    assert not ag.executing


def test_a_service_request_is_interrupted_too(agent: tuple[Agent, str]) -> None:
    ag, path = agent

    def play(conn: socket.socket) -> None:
        init = {"id": 1, "op": "service_init", "code": "import time\ntime.sleep(60)"}
        protocol.send_message(conn, init)
        assert receive(conn)["init_error"] == ""
        protocol.send_message(conn, {"id": 2, "op": "run", "inputs": {}})
        threading.Event().wait(0.5)
        protocol.send_message(conn, {"id": 3, "op": "interrupt"})
        assert receive(conn) == {"id": 3, "ok": True}
        reply = receive(conn)
        assert reply["id"] == 2 and reply["success"] is False
        assert "interrupted" in reply["error"]

    serve_once(ag, path, play)


@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_an_interrupt_after_a_run_of_short_requests_is_read(
    agent: tuple[Agent, str], pause: float
) -> None:
    """The watching thread is woken for a request only when it waits for one; after short
    requests it is still polling the connection (for ``READ_AFTER``), or has gone back to
    waiting (``pause``): either way it reads the long request's interrupt."""
    ag, path = agent
    code = "import time\nif wait:\n    time.sleep(60)"

    def play(conn: socket.socket) -> None:
        init = {"id": 1, "op": "service_init", "code": code}
        init["inputs"] = [{"name": "wait", "type": "logical"}]
        protocol.send_message(conn, init)
        assert receive(conn)["init_error"] == ""
        for n in range(2, 50):
            protocol.send_message(conn, {"id": n, "op": "run", "inputs": {"wait": False}})
            assert receive(conn)["success"] is True
        threading.Event().wait(pause)
        protocol.send_message(conn, {"id": 50, "op": "run", "inputs": {"wait": True}})
        threading.Event().wait(0.3)
        protocol.send_message(conn, {"id": 51, "op": "interrupt"})
        assert receive(conn) == {"id": 51, "ok": True}
        reply = receive(conn)
        assert reply["id"] == 50 and "interrupted" in reply["error"]

    serve_once(ag, path, play)
    assert ag.redialer.interrupts == 1


def test_any_other_message_mid_request_breaks_the_connection(agent: tuple[Agent, str]) -> None:
    ag, path = agent

    def play(conn: socket.socket) -> None:
        code = "import time\ntime.sleep(1)"
        protocol.send_message(conn, {"id": 1, "op": "execute", "code": code, "seq": 1})
        threading.Event().wait(0.3)
        protocol.send_message(conn, {"id": 2, "op": "ping"})
        with pytest.raises((EOFError, OSError)):
            receive(conn)  # no reply to either: the agent hung up, as for any protocol error

    serve_once(ag, path, play)
    assert ag.redialer.interrupts == 0
