"""A reply is encoded once: the JSON whose size the agent checked is the JSON it sends, and
a reply that needed cleaning (text that is not UTF-8) or was too large goes out as checked."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from o16n_agent import agent as agent_module
from o16n_agent import protocol
from o16n_agent.agent import Agent, checked

from tests.agent.test_interrupt import receive, serve_once


def test_the_checked_json_is_the_reply_itself() -> None:
    reply, blob, data = checked({"id": 1, "ok": True, "x": [1.5, "é"]}, None)
    assert data is not None and protocol.loads(data) == reply
    reply, blob, data = checked({"id": 2, "ok": True}, b"raw")
    assert blob == b"raw" and data is None  # the frame names the blob: encoded when sent


def test_a_reply_that_cannot_go_as_it_is_goes_as_checked() -> None:
    reply, _, data = checked({"id": 3, "ok": True, "names": ["\udcff"]}, None)
    assert data is not None and protocol.loads(data) == reply == {
        "id": 3,
        "ok": True,
        "names": ["\\udcff"],
    }
    reply, _, data = checked({"id": 4, "ok": True, "x": 10**6000}, b"blob")
    assert data is not None and protocol.loads(data) == reply and reply["ok"] is False


def test_encoded_goes_on_the_wire_unless_a_blob_needs_naming() -> None:
    a, b = socket.socketpair()
    with a, b:
        protocol.send_message(a, {"id": 1}, encoded=b'{"id":1,"pre":true}')
        assert protocol.recv_message(b, 1 << 20, 0) == ({"id": 1, "pre": True}, None)
        protocol.send_message(a, {"id": 2}, b"xy", encoded=b'{"id":2}')
        assert protocol.recv_message(b, 1 << 20, 10) == ({"id": 2, "blob": 2}, b"xy")


def test_served_replies_are_the_checked_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(agent_module, "REPLY_MAX", 4096)
    path = str(tmp_path / "agent.sock")
    ag = Agent(path, str(tmp_path))

    def play(conn: socket.socket) -> None:
        protocol.send_message(conn, {"id": 1, "op": "execute", "code": "print('\\udcff')"})
        assert receive(conn)["console"] == "\\udcff\n"
        protocol.send_message(conn, {"id": 2, "op": "execute", "code": "print('x' * 5000)"})
        reply = receive(conn)
        assert reply["id"] == 2 and reply["ok"] is False and "more than" in reply["error"]
        protocol.send_message(conn, {"id": 3, "op": "ping"})
        assert receive(conn)["pong"] is True

    serve_once(ag, path, play)
