"""An upgrade that bumps the agent's protocol strands no snapshot and no service: containers
run the controller's agent, mounted, whatever agent their image carries (issue 10)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import o16n_agent
import pytest
import requests
from o16n_agent import protocol

from tests.live_server import LiveServer, run_server

pytestmark = pytest.mark.docker

VERSION_LINE = re.compile(r"^VERSION = \d+$", re.MULTILINE)


def agent_copy(dest: Path, version: int) -> Path:
    """A copy of this tree's agent package under ``dest`` speaking protocol ``version``."""
    package = dest / "o16n_agent"
    installed = Path(o16n_agent.__file__).parent  # what this process (a controller) imports
    shutil.copytree(installed, package, ignore=shutil.ignore_patterns("__pycache__"))
    source = (package / "protocol.py").read_text()
    assert VERSION_LINE.search(source), "protocol.VERSION moved: adapt this test"
    (package / "protocol.py").write_text(VERSION_LINE.sub(f"VERSION = {version}", source))
    return dest


def _call(server: LiveServer, method: str, path: str, **kw: Any) -> Any:
    resp = requests.request(method, server.url + path, headers=server.headers, timeout=120, **kw)
    assert resp.status_code in (200, 201), (path, resp.status_code, resp.text)
    return resp.json()


def _consume(server: LiveServer, name: str) -> Any:
    return _call(server, "POST", f"/api/{name}/1", json={"a": 2})["outputParameters"]


def test_snapshots_and_services_survive_a_protocol_bump(data_dir: Path, tmp_path: Path) -> None:
    servers = run_server(data_dir=data_dir, warm_pool_size="0", service_warm_pool_size="0")
    first = next(servers)
    try:
        session = _call(first, "POST", "/sessions", json={"runtimeType": "Python"})["sessionId"]
        _call(first, "POST", f"/sessions/{session}/execute", json={"code": "base = 40"})
        snapshot = _call(first, "POST", f"/sessions/{session}/snapshot", json={})["snapshotId"]
        _call(first, "DELETE", f"/sessions/{session}")
        io_defs = {
            "inputParameterDefinitions": [{"name": "a", "type": "integer"}],
            "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
            "runtimeType": "Python",
        }
        _call(first, "POST", "/services/Plain/1", json={"code": "y = a + 1", **io_defs})
        _call(
            first,
            "POST",
            "/services/FromSnapshot/1",
            json={"code": "y = base + a", "snapshotId": snapshot, **io_defs},
        )
        assert _consume(first, "Plain") == {"y": 3}
        assert _consume(first, "FromSnapshot") == {"y": 42}
    finally:
        servers.close()

    upgraded = agent_copy(tmp_path / "upgrade", protocol.VERSION + 1)
    path = os.pathsep.join(filter(None, [str(upgraded), os.environ.get("PYTHONPATH")]))
    servers = run_server(
        data_dir=data_dir, env={"PYTHONPATH": path}, warm_pool_size="0", service_warm_pool_size="0"
    )
    second = next(servers)
    try:
        assert _consume(second, "Plain") == {"y": 3}
        assert _consume(second, "FromSnapshot") == {"y": 42}
        body = {"runtimeType": "Python", "snapshotId": snapshot}  # on the snapshot's image
        session = _call(second, "POST", "/sessions", json=body)["sessionId"]
        result = _call(
            second, "POST", f"/sessions/{session}/execute", json={"code": "print(base + 2)"}
        )
        assert result["success"] and result["consoleOutput"] == "42\n"
        _call(second, "DELETE", f"/sessions/{session}")
    finally:
        servers.close()
    # what ran was the upgraded agent, staged from the controller's installation
    [bundle] = (data_dir / "agent").iterdir()
    staged = (bundle / "o16n_agent" / "protocol.py").read_text()
    assert f"VERSION = {protocol.VERSION + 1}\n" in staged
