"""Sessions and services over three compute nodes: the local engine and two real engines
reached over SSH (``conftest.compute_nodes``), placement, image moves, drain and loss."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.runtime.docker.nodes import control_dir
from controller.runtime.docker.ssh import SshNode
from controller.runtime.nodes import parse_node
from controller.settings import Settings
from tests.conftest import bearer, login, make_settings
from tests.nodes import engines
from tests.services.conftest import consume, publish
from tests.sessions.conftest import execute, new_session

pytestmark = pytest.mark.docker

Client = TestClient[Any, Any]


@pytest.fixture
def node_settings(
    compute_nodes: list[engines.Node], compute_nodes_known_hosts: Path, data_dir: Path
) -> Callable[..., Settings]:
    """Settings of an app with both nodes (and the local engine) as compute nodes."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "compute_nodes": " ".join(node.ssh_entry for node in compute_nodes),
            "ssh_key": compute_nodes[0].client_key,
            "ssh_known_hosts": compute_nodes_known_hosts,
            "node_dir": data_dir / "n",
            "node_probe_seconds": 1.0,
            "warm_pool_size": 0,
            "service_warm_pool_size": 0,
        }
        values.update(overrides)
        return make_settings(data_dir, **values)

    return make


async def nodes_of(client: Client, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    resp = await client.get("/admin/nodes", headers=headers)
    assert resp.status == 200, await resp.text()
    return {node["entry"]: node for node in (await resp.json())["nodes"]}


async def drain_all_but(client: Client, headers: dict[str, str], entry: str) -> None:
    """New containers go to the node ``entry`` only (the others drained, it not)."""
    for node in (await nodes_of(client, headers)).values():
        method = client.delete if node["entry"] == entry else client.post
        resp = await method(f"/admin/nodes/{node['name']}/drain", headers=headers)
        assert resp.status == 200, await resp.text()


async def started(aiohttp_client: Any, settings: Settings) -> tuple[Client, dict[str, str]]:
    """The app, started, and the Owner's headers."""
    client = await aiohttp_client(create_app(settings))
    return client, bearer((await login(client))["access_token"])


async def spread_pool(
    client: Client, headers: dict[str, str], name: str, nodes: list[engines.Node], instance: str
) -> None:
    """Give service ``name`` a pool of two, and wait until it runs on both ``nodes``."""
    resp = await client.post(
        f"/services/{name}/1/pool", json={"InitialPoolSize": 2, "MaxPoolSize": 2}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    deadline = time.monotonic() + 60
    while not all(containers_on(node, instance) for node in nodes):
        assert time.monotonic() < deadline, [
            (n["entry"], n["containers"]) for n in (await nodes_of(client, headers)).values()
        ]
        await asyncio.sleep(0.2)


async def snapshot_on(client: Client, headers: dict[str, str], entry: str, code: str = "") -> str:
    """A snapshot of a session on the node ``entry`` (the only one taking containers then),
    after running ``code`` there; its id."""
    await drain_all_but(client, headers, entry)
    session = await new_session(client, headers)
    if code:
        ran = await execute(client, headers, session, code)
        assert ran["success"], ran
    resp = await client.post(f"/sessions/{session}/snapshot", json={}, headers=headers)
    assert resp.status == 201, await resp.text()
    snapshot: str = (await resp.json())["snapshotId"]
    return snapshot


def containers_on(node: engines.Node, instance: str) -> list[str]:
    listed = node.docker("ps", "-aq", "--filter", f"label=o16n.instance={instance}")
    return listed.stdout.split()


async def test_sessions_spread_over_the_nodes_and_run_where_they_were_placed(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()
    client, headers = await started(aiohttp_client, settings)
    nodes = await nodes_of(client, headers)
    assert [node["state"] for node in nodes.values()] == ["up", "up", "up"], nodes

    sessions = [await new_session(client, headers) for _ in range(6)]
    counts = {
        entry: node["containers"].get("session", 0)
        for entry, node in (await nodes_of(client, headers)).items()
    }
    assert sorted(counts.values()) == [2, 2, 2], counts
    for node in compute_nodes:
        assert len(containers_on(node, settings.instance)) == 2
    for session in sessions:  # each runs code, over its own node's forwarded socket
        ran = await execute(client, headers, session, "x = sum(range(10))\nprint(x)")
        assert ran["success"] and ran["consoleOutput"].strip() == "45", ran

    for session in sessions:
        assert (await client.delete(f"/sessions/{session}", headers=headers)).status == 200
    deadline = time.monotonic() + 30
    while any(containers_on(node, settings.instance) for node in compute_nodes):
        assert time.monotonic() < deadline, "the remote containers were not removed"
        await asyncio.sleep(0.2)


async def test_a_drained_node_takes_no_new_container(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()
    client, headers = await started(aiohttp_client, settings)
    target = compute_nodes[1]
    await drain_all_but(client, headers, target.ssh_entry)
    for _ in range(3):
        await new_session(client, headers)
    assert len(containers_on(target, settings.instance)) == 3
    assert containers_on(compute_nodes[0], settings.instance) == []
    nodes = await nodes_of(client, headers)
    assert nodes[target.ssh_entry]["containers"] == {"session": 3}
    assert nodes["local"]["draining"] is True and nodes["local"]["containers"] == {}


async def test_a_snapshot_made_on_one_node_runs_on_another(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings(container_read_only=False)
    client, headers = await started(aiohttp_client, settings)
    first, second = compute_nodes
    snapshot = await snapshot_on(
        client, headers, first.ssh_entry, "open('/var/tmp/made-on', 'w').write('A')"
    )

    # only the second node takes containers now: the snapshot's image must move there
    await drain_all_but(client, headers, second.ssh_entry)
    moved = await new_session(client, headers, snapshotId=snapshot)
    there = await execute(client, headers, moved, "print(open('/var/tmp/made-on').read())")
    assert there["success"] and there["consoleOutput"].strip() == "A", there
    assert len(containers_on(second, settings.instance)) == 1
    copied = (await nodes_of(client, headers))[second.ssh_entry]
    # only the snapshot's own layer moved, not the runtime image's (hundreds of MB)
    assert copied["imagesCopied"] == 1 and 0 < copied["bytesCopied"] < 20 * 1024**2, copied

    # published from the snapshot, a service consumed on the second node
    await publish(
        client,
        headers,
        "MadeOn",
        "1",
        snapshotId=snapshot,
        code="made = open('/var/tmp/made-on').read()",
        outputParameterDefinitions=[{"name": "made", "type": "character"}],
    )
    result = await consume(client, headers, "MadeOn", "1", {})
    assert result["success"] and result["outputParameters"] == {"made": "A"}, result


async def test_a_lost_node_s_sessions_answer_410_and_it_comes_back_empty(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()
    client, headers = await started(aiohttp_client, settings)
    node = compute_nodes[1]
    await drain_all_but(client, headers, node.ssh_entry)
    sessions = [await new_session(client, headers) for _ in range(2)]
    assert len(containers_on(node, settings.instance)) == 2

    node.cut_link()
    try:
        cut = time.monotonic()
        gone: list[str] = []
        while len(gone) < len(sessions):
            assert time.monotonic() - cut < 30, "the node's sessions still answer"
            for session in sessions:
                if session in gone:
                    continue
                resp = await client.post(
                    f"/sessions/{session}/execute", json={"code": "1"}, headers=headers
                )
                if resp.status == 410:
                    body = await resp.json()
                    assert "compute node lost" in body["message"], body
                    assert "after an outage" not in body["message"], body  # it never answered
                    gone.append(session)
            await asyncio.sleep(0.2)
        print(f"cut to 410: {time.monotonic() - cut:.1f} s")
        state = (await nodes_of(client, headers))[node.ssh_entry]
        assert state["state"] == "lost" and state["containers"] == {}, state
    finally:
        node.restore_link()

    deadline = time.monotonic() + 60
    while (await nodes_of(client, headers))[node.ssh_entry]["state"] != "up":
        assert time.monotonic() < deadline, "the node did not come back"
        await asyncio.sleep(0.5)
    # back, and empty: its sessions stay ended
    assert containers_on(node, settings.instance) == []
    for session in sessions:
        resp = await client.post(
            f"/sessions/{session}/execute", json={"code": "1"}, headers=headers
        )
        assert resp.status in (404, 410), await resp.text()


async def test_a_pristine_snapshot_moves_nothing(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()  # a read-only root: no session changes its image
    client, headers = await started(aiohttp_client, settings)
    first, second = compute_nodes
    snapshot = await snapshot_on(client, headers, first.ssh_entry)
    await drain_all_but(client, headers, second.ssh_entry)
    moved = await new_session(client, headers, snapshotId=snapshot)
    assert (await execute(client, headers, moved, "1"))["success"]
    copied = (await nodes_of(client, headers))[second.ssh_entry]
    assert copied["imagesCopied"] == 1 and copied["bytesCopied"] == 0, copied


async def test_warm_containers_wait_on_every_node_and_sessions_take_the_nearest(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings(warm_pool_size=1)
    client, headers = await started(aiohttp_client, settings)
    deadline = time.monotonic() + 60
    while True:  # one ready on each node (their agents connected)
        warm = {
            e: n["containers"].get("warm", 0) for e, n in (await nodes_of(client, headers)).items()
        }
        metrics = await (await client.get("/metrics", headers=headers)).text()
        if list(warm.values()) == [1, 1, 1] and (
            'o16n_warm_pool_containers{pool="sessions"} 3.0' in metrics
        ):
            assert 'o16n_warm_pool_target{pool="sessions"} 3.0' in metrics
            break
        assert time.monotonic() < deadline, warm
        await asyncio.sleep(0.2)
    await drain_all_but(client, headers, compute_nodes[1].ssh_entry)
    await new_session(client, headers)
    nodes = await nodes_of(client, headers)
    # the session took the remote node's warm container (it counts as a session now)
    assert nodes[compute_nodes[1].ssh_entry]["containers"].get("session") == 1, [
        (n["entry"], n["containers"]) for n in nodes.values()
    ]


async def test_sessions_on_a_node_survive_a_controller_restart(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    node = compute_nodes[0]
    await drain_all_but(first, headers, node.ssh_entry)
    kept = await new_session(first, headers)
    await execute(first, headers, kept, "state = 41")
    await first.close()
    assert len(containers_on(node, settings.instance)) == 1, "the session outlives us"

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    result = await execute(second, headers, kept, "state += 1\nprint(state)")
    assert result["success"] and result["consoleOutput"].strip() == "42", result
    assert (await nodes_of(second, headers))[node.ssh_entry]["containers"] == {"session": 1}


async def test_a_service_pool_spread_over_two_nodes_outlives_one_of_them(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()
    client, headers = await started(aiohttp_client, settings)
    nodes = await nodes_of(client, headers)
    await client.post(f"/admin/nodes/{nodes['local']['name']}/drain", headers=headers)
    await publish(client, headers, "Spread", "1", code="y = 2")
    await spread_pool(client, headers, "Spread", compute_nodes, settings.instance)
    deadline = time.monotonic() + 60
    while True:  # the pool's status names the nodes its containers run on (ML Server's shape)
        pool = await (await client.get("/services/Spread/1/pool", headers=headers)).json()
        if sum(item["ready"] for item in pool) == 2:
            break
        assert time.monotonic() < deadline, pool
        await asyncio.sleep(0.2)
    names = {n["entry"]: n["name"] for n in (await nodes_of(client, headers)).values()}
    assert sorted(item["computeNodeEndpoint"] for item in pool) == sorted(
        names[node.ssh_entry] for node in compute_nodes
    ), pool

    cut = compute_nodes[0]
    cut.cut_link()
    try:
        answers = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resp = await client.post("/api/Spread/1", json={}, headers=headers)
            answers.append((resp.status, (await resp.json()).get("success")))
            if answers[-5:] == [(200, True)] * 5 and len(answers) > 5:
                break
            await asyncio.sleep(0.1)
        # every answer is an answer (no 500), and the pool serves again from the other node
        assert all(status in (200, 503) for status, _ in answers), answers
        assert answers[-5:] == [(200, True)] * 5, answers
    finally:
        cut.restore_link()


async def test_the_local_engine_is_not_a_second_node(aiohttp_client: Any, data_dir: Path) -> None:
    """The same engine under another address would be counted twice and its containers
    listed twice: it is refused, and says why."""
    settings = make_settings(data_dir, compute_nodes="unix:///var/run/docker.sock")
    client, headers = await started(aiohttp_client, settings)
    nodes = await nodes_of(client, headers)
    again = nodes["unix:///var/run/docker.sock"]
    assert again["state"] != "up" and "same Docker engine" in again["error"], again
    assert (await new_session(client, headers)) and nodes["local"]["state"] == "up"


async def test_batch_records_on_a_lost_node_run_again_elsewhere(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    settings = node_settings()
    client, headers = await started(aiohttp_client, settings)
    nodes = await nodes_of(client, headers)
    await client.post(f"/admin/nodes/{nodes['local']['name']}/drain", headers=headers)
    await publish(
        client,
        headers,
        "Slow",
        "1",
        code="import time\ntime.sleep(pause)\ny = x * 2",
        inputParameterDefinitions=[
            {"name": "x", "type": "integer"},
            {"name": "pause", "type": "numeric"},
        ],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    await spread_pool(client, headers, "Slow", compute_nodes, settings.instance)
    deadline = time.monotonic() + 60

    records = [{"x": i, "pause": 0.3} for i in range(24)]
    resp = await client.post("/api/Slow/1/batch?parallelCount=2", json=records, headers=headers)
    assert resp.status == 202, await resp.text()
    batch = (await resp.json())["batchExecutionId"]
    while True:  # some records done on both nodes, then one node goes
        status = await (await client.get(f"/api/Slow/1/batch/{batch}", headers=headers)).json()
        if status["completedItemCount"] >= 4:
            break
        assert time.monotonic() < deadline + 60, status
        await asyncio.sleep(0.1)
    compute_nodes[0].cut_link()
    try:
        deadline = time.monotonic() + 120
        while status["state"] not in ("Complete", "Failed"):
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
            status = await (await client.get(f"/api/Slow/1/batch/{batch}", headers=headers)).json()
    finally:
        compute_nodes[0].restore_link()
    assert status["state"] == "Complete", status
    results = status["batchExecutionResults"]
    assert [r["success"] for r in results] == [True] * 24, results
    assert [r["outputParameters"]["y"] for r in results] == [2 * i for i in range(24)]


async def test_a_master_left_by_a_controller_that_died_is_ended_at_start(
    aiohttp_client: Any, node_settings: Callable[..., Settings], compute_nodes: list[engines.Node]
) -> None:
    """A killed controller's SSH masters live on in sessions of their own, holding their
    node's connection and forwards: the next start of a controller of that data directory
    ends them."""
    settings = node_settings(compute_nodes="")
    assert settings.ssh_key is not None and settings.ssh_known_hosts is not None
    left = SshNode(
        parse_node(compute_nodes[0].ssh_entry),
        key_file=settings.ssh_key,
        known_hosts=settings.ssh_known_hosts,
        control_dir=control_dir(settings.data_dir),
    )
    await left.open()
    try:
        assert left.alive
        await started(aiohttp_client, settings)
        async with asyncio.timeout(10):
            await left.wait_closed()
    finally:
        await left.close()
