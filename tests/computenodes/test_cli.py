"""``o16n admin nodes …``: the CLI's calls of ``/computenodes`` and ``/admin/nodes``, run
in this process (on a worker thread) against an app with a recording ``NodeControl``."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.runtime.nodes import parse_node
from o16n_client import admin
from tests.computenodes.conftest import RecordingNodes
from tests.conftest import ADMIN_PASSWORD

A, C = "ssh://o16n@node-a", "unix:///run/docker-c.sock"


@pytest.fixture
def cli(
    client: TestClient[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """``o16n admin ARGS`` → (exit code, stdout, stderr), logged in as the admin."""
    for name in [k for k in os.environ if k.startswith("O16N_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("O16N_SERVER", str(client.make_url("/")))
    monkeypatch.setenv("O16N_USERNAME", "admin")
    monkeypatch.setenv("O16N_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.setenv("HOME", str(tmp_path))

    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(admin.main, list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


async def test_set_add_remove_list_drain(cli: Any, recorder: RecordingNodes) -> None:
    assert await cli("nodes", "set", C, A) == (0, f"{C}\n{A}\n", "")
    code, out, _ = await cli("nodes", "remove", C, "--json")
    assert code == 0 and json.loads(out) == {"computeNodes": [A]}
    assert (await cli("nodes", "add", C))[:2] == (0, f"{A}\n{C}\n")
    code, out, _ = await cli("nodes", "list")
    assert code == 0 and out.splitlines()[0].split() == [
        "NAME",
        "ENTRY",
        "STATE",
        "VERSION",
        "LOAD",
        "ERROR",
    ]
    assert parse_node(A).name in out and "ssh public key: -" in out
    name = parse_node(C).name
    assert (await cli("nodes", "drain", name))[0] == 0 and recorder.draining == {name}
    assert (await cli("nodes", "undrain", name))[0] == 0 and recorder.draining == set()
    code, _, err = await cli("nodes", "add", "http://1.1.1.1")
    assert code == 1 and "entries[0]" in err
    assert (await cli("nodes", "set"))[:2] == (0, "(only the local engine)\n")
    assert recorder.applied[-1] == []
