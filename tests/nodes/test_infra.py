"""The compute-node fixture gives what the multi-node tests rely on: engines reached over
SSH with a pinned host key and the client key only, the runtime image on each, containers
that stay on their node, a link that can be cut and restored, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from controller.runtime.docker.image import default_tag
from tests.nodes import engines
from tests.nodes.conftest import nodes_unavailable

pytestmark = pytest.mark.docker

VERSION = ["docker", "version", "--format", "{{.Server.Version}}"]


def ssh(node: engines.Node, *remote: str, **options: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        node.ssh_command(*remote, **options), capture_output=True, text=True, timeout=30
    )


def test_each_engine_answers_over_ssh_with_the_pinned_keys(
    compute_nodes: list[engines.Node],
) -> None:
    for node in compute_nodes:
        answer = ssh(node, *VERSION)
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == node.docker(*VERSION[1:]).stdout.strip()
        # and that engine is the node's own, not the host's or the other node's
        root = ssh(node, "docker", "info", "--format", "{{.DockerRootDir}}").stdout.strip()
        assert root == str(node.data_root)
        # the node's DOCKER_HOST is its own engine's socket, as `docker -H ssh://` expects
        assert ssh(node, "printenv", "DOCKER_HOST").stdout.strip() == (
            f"unix://{node.engine_socket}"
        )


def test_a_host_key_not_pinned_is_refused(
    compute_nodes: list[engines.Node], tmp_path: Path
) -> None:
    first, second = compute_nodes
    # the second node's host key, pinned at the first node's address
    kind_blob = second.known_hosts.read_text().split(maxsplit=1)[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{first.address} {kind_blob}")
    answer = ssh(first, "true", known_hosts=wrong)
    assert answer.returncode == 255
    assert "host key" in answer.stderr.lower(), answer.stderr
    empty = tmp_path / "empty"
    empty.write_text("")
    answer = ssh(first, "true", known_hosts=empty)  # no trust on first use either
    assert answer.returncode == 255, answer.stderr


def test_the_controllers_key_and_known_hosts_reach_both_nodes(
    compute_nodes: list[engines.Node], compute_nodes_known_hosts: Path
) -> None:
    """One client key and one known_hosts for all nodes, as in the controller's settings."""
    first, second = compute_nodes
    assert first.client_key == second.client_key
    for node in compute_nodes:
        answer = ssh(node, "true", known_hosts=compute_nodes_known_hosts)
        assert answer.returncode == 0, answer.stderr


def test_another_client_key_is_refused(compute_nodes: list[engines.Node], tmp_path: Path) -> None:
    node = compute_nodes[0]
    argv = node.ssh_command("true")
    argv[argv.index(str(node.client_key))] = str(engines.make_key(tmp_path / "other"))
    answer = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert answer.returncode == 255
    assert "Permission denied" in answer.stderr, answer.stderr


def test_containers_run_without_network_and_stay_on_their_node(
    compute_nodes: list[engines.Node],
) -> None:
    ran: dict[str, str] = {}
    for node in compute_nodes:
        done = node.docker(
            *("run", "-d", "--network", "none", "--entrypoint", "/opt/o16n/bin/python"),
            *(default_tag(), "-c", "import time; time.sleep(60)"),
        )
        ran[node.name] = done.stdout.strip()
    try:
        for node in compute_nodes:
            ours = ran[node.name]
            listed = node.docker("ps", "-q", "--no-trunc").stdout.split()
            assert ours in listed
            networks = node.docker(
                "inspect", "--format", "{{json .NetworkSettings.Networks}}", ours
            ).stdout
            assert '"none"' in networks
            for other in compute_nodes:
                if other is not node:
                    assert ours not in other.docker("ps", "-aq", "--no-trunc").stdout.split()
                    assert other.docker("inspect", ours, check=False).returncode != 0
    finally:
        for node in compute_nodes:
            node.docker("rm", "-f", ran[node.name], check=False)


def test_a_cut_link_makes_ssh_fail_until_restored(compute_nodes: list[engines.Node]) -> None:
    node = compute_nodes[0]
    node.cut_link()
    try:
        answer = ssh(node, "true")
        assert answer.returncode == 255
        assert "timed out" in answer.stderr, answer.stderr
        assert ssh(compute_nodes[1], "true").returncode == 0  # the other node is not cut
    finally:
        node.restore_link()
    answer = ssh(node, "true")
    assert answer.returncode == 0, answer.stderr


def leftovers(node: engines.Node) -> list[str]:
    """What of ``node`` is still there: namespace, veth, mounts, processes, cgroups, files."""
    found: list[str] = []
    if Path(f"/run/netns/{node.name}").exists():
        found.append(f"netns {node.name}")
    if Path(f"/sys/class/net/{node.host_veth}").exists():
        found.append(f"veth {node.host_veth}")
    found += [f"mount {point}" for point in engines.mounts_under(node.dir)]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if str(node.dir).encode() in cmdline:
                found.append(f"process {proc.name}: {cmdline.decode(errors='replace')}")
    found += [f"cgroup {path}" for path in engines.cgroups_of(node)]
    if node.dir.exists():
        found.append(f"directory {node.dir}")
    return found


@pytest.fixture
def _root_and_tools() -> None:
    reason = nodes_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.mark.usefixtures("_root_and_tools")
@pytest.mark.parametrize("in_memory", [True, False], ids=["tmpfs", "disk"])
def test_a_stopped_node_leaves_nothing_behind(in_memory: bool) -> None:
    node = engines.start_node(in_memory=in_memory)
    try:
        # a container, so that there are mounts, cgroups and a shim to clean up as well
        node.docker("run", "-d", "--network", "none", engines.tiny_image(node), "600")
        assert engines.cgroups_of(node)
        assert leftovers(node)
    finally:
        engines.stop_node(node)
    assert leftovers(node) == []


@pytest.mark.usefixtures("_root_and_tools")
def test_a_node_whose_daemons_died_leaves_nothing_behind() -> None:
    """An engine killed with its containers running (no shutdown of its own): its shims,
    containers, mounts and cgroups are still cleaned up."""
    node = engines.start_node()
    try:
        node.docker("run", "-d", "--network", "none", engines.tiny_image(node), "600")
        sockets = engines.shim_sockets(node)
        assert len(sockets) == 1
        for daemon in ("dockerd", "containerd"):
            os.kill(node.pids[daemon], signal.SIGKILL)
    finally:
        engines.stop_node(node)
    assert leftovers(node) == []
    assert not any(socket.exists() for socket in sockets)


@pytest.mark.usefixtures("_root_and_tools")
def test_a_start_failing_half_way_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[engines.Node] = []
    real_engine = engines._engine

    def engine_then_fail(node: engines.Node, in_memory: bool) -> None:
        started.append(node)
        real_engine(node, in_memory)  # namespace, veth, sshd, containerd, dockerd all up
        raise engines.NodeError("failing on purpose, after the engine started")

    monkeypatch.setattr(engines, "_engine", engine_then_fail)
    with pytest.raises(engines.NodeError, match="on purpose"):
        engines.start_node()
    [node] = started
    assert leftovers(node) == []


@pytest.mark.usefixtures("_root_and_tools")
def test_a_node_whose_test_run_died_is_swept() -> None:
    node = engines.start_node()
    try:
        node.docker("run", "-d", "--network", "none", engines.tiny_image(node), "600")
        gone = subprocess.Popen(["true"])
        gone.wait()
        record = node.dir / "node.json"
        recorded = json.loads(record.read_text())
        record.write_text(json.dumps({**recorded, "owner_pid": gone.pid}))  # a run that died
        assert node.name in engines.sweep_stale()
    finally:
        if node.dir.exists():
            engines.stop_node(node)
    assert leftovers(node) == []
