"""``/status``'s ``computeNodes``: one child per node, judged by its state; a lost node
warns while another answers, fails when none does; a describe that hangs fails it within
the probe's bound; an engine without compute nodes has no such component."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp.test_utils import TestClient

from controller.health import HealthProbe
from controller.runtime.engines import Engine
from controller.runtime.nodes import parse_node
from tests.computenodes.conftest import RecordingNodes

A, C = "ssh://o16n@node-a", "unix:///run/docker-c.sock"


def _engine(nodes: Any) -> Engine:
    environments = SimpleNamespace(base="o16n-runtime:stub")
    return Engine("stub", None, environments, nodes=nodes)  # type: ignore[arg-type]


async def _compute_nodes(nodes: Any, tmp_path: Path) -> dict[str, Any]:
    probe = HealthProbe(_engine(nodes), tmp_path, engine_timeout=0.05)
    try:
        checked = await probe.check()
    finally:
        await probe.close()
    component: dict[str, Any] = checked["computeNodes"]
    return component


async def test_each_node_is_a_child_judged_by_its_state(tmp_path: Path) -> None:
    recorder = RecordingNodes()
    await recorder.apply([parse_node(A), parse_node(C)])
    component = await _compute_nodes(recorder, tmp_path)
    assert component["statusCode"] == "pass"
    assert list(component["components"]) == ["local", parse_node(A).name, parse_node(C).name]
    child = component["components"][parse_node(A).name]
    assert child["statusCode"] == "pass"
    assert child["details"]["version"] == "27.0" and child["details"]["containers"]
    # any signed-in user reads /status: no node's address or error (the Owner's /admin/nodes)
    assert "entry" not in child["details"] and "error" not in child["details"]
    assert component["details"]["nodes"] == {"up": 3}

    recorder.draining.add(parse_node(C).name)
    recorder.lost.add(A)
    component = await _compute_nodes(recorder, tmp_path)
    assert component["statusCode"] == "warn"  # the others still serve
    children = component["components"]
    assert children[parse_node(A).name]["statusCode"] == "fail"
    assert children[parse_node(A).name]["details"]["state"] == "lost"
    assert children[parse_node(C).name]["statusCode"] == "warn"
    assert component["details"]["nodes"] == {"draining": 1, "lost": 1, "up": 2}


async def test_a_drained_node_that_is_up_warns(tmp_path: Path) -> None:
    """The Docker engine reports a drain beside the state: ``up`` and ``draining: true``."""

    async def described() -> list[dict[str, Any]]:
        return [
            {"name": "local", "entry": "unix:///var/run/docker.sock", "state": "up"},
            {"name": "n1", "entry": "ssh://o@h1", "state": "up", "draining": True},
        ]

    component = await _compute_nodes(SimpleNamespace(describe=described), tmp_path)
    assert component["statusCode"] == "warn"
    assert component["components"]["n1"]["statusCode"] == "warn"
    assert component["components"]["local"]["statusCode"] == "pass"


async def test_no_node_answering_fails_it(tmp_path: Path) -> None:
    lost = SimpleNamespace(describe=lambda: _described("lost", "connecting"))
    component = await _compute_nodes(lost, tmp_path)
    assert component["statusCode"] == "fail"


async def _described(*states: str) -> list[dict[str, Any]]:
    return [{"name": f"n{i}", "entry": f"ssh://o@h{i}", "state": s} for i, s in enumerate(states)]


async def test_a_describe_that_hangs_fails_within_the_bound(tmp_path: Path) -> None:
    async def never() -> list[dict[str, Any]]:
        await asyncio.Event().wait()
        return []

    component = await _compute_nodes(SimpleNamespace(describe=never), tmp_path)
    assert component["statusCode"] == "fail"
    assert "did not answer" in component["details"]["error"]


async def test_status_shows_the_nodes(
    client: TestClient[Any, Any], admin_headers: dict[str, str], recorder: RecordingNodes
) -> None:
    resp = await client.post("/computenodes", json={"entries": [A]}, headers=admin_headers)
    assert resp.status == 200
    recorder.lost.add(A)
    body = await (await client.get("/status", headers=admin_headers)).json()
    component = body["components"]["computeNodes"]
    assert component["statusCode"] == "warn" and body["statusCode"] in ("warn", "fail")
    assert component["components"][parse_node(A).name]["statusCode"] == "fail"


async def test_an_engine_without_nodes_has_no_component(tmp_path: Path) -> None:
    probe = HealthProbe(_engine(None), tmp_path)
    try:
        assert "computeNodes" not in await probe.check()
    finally:
        await probe.close()
