"""Children that user code forks are reaped (no zombie keeps a pid), against the real agent
in this process: at once after a request that forked with ``os.fork``, and within
``REAP_INTERVAL`` for a fork Python's hooks never saw (``ctypes``' ``fork``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from o16n_agent import agent as agent_module
from o16n_agent.agent import Agent

#: user code: fork with ``FORK``, the child leaves at once; wait until it has exited without
#: reaping it (``WNOWAIT``), so only the agent can; ``child`` is its pid
FORK_AND_WAIT = """
import os
pid = FORK()
if pid == 0:
    os._exit(0)
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
child = pid
"""
RAW_FORK = "import ctypes\nFORK = ctypes.CDLL(None).fork\n"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    yield Agent(str(tmp_path / "no.sock"), str(tmp_path))


def reaped(pid: int) -> bool:
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False


def run(ag: Agent, code: str) -> int:
    """Run ``code`` as one request; the value of its ``child`` (0 if none)."""
    code += "\nglobals().get('child', 0)"
    reply, _ = ag.handle({"id": 1, "op": "execute", "code": code}, None)
    assert reply["ok"] and reply["success"], reply
    return int(reply["console"])


def test_a_child_forked_with_os_fork_is_reaped_by_the_end_of_the_request(agent: Agent) -> None:
    run(agent, "1")  # a first request: the periodic look is done, not due for a while
    pid = run(agent, "FORK = __import__('os').fork\n" + FORK_AND_WAIT)
    assert reaped(pid)


def test_a_child_forked_behind_pythons_back_is_reaped_soon(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_module, "REAP_INTERVAL", 0.3)
    run(agent, "1")
    pid = run(agent, RAW_FORK + FORK_AND_WAIT)
    deadline = time.monotonic() + 5
    while not reaped(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
        run(agent, "1")
    assert reaped(pid)
