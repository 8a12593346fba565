"""``SshNode`` against a real compute node (its own network namespace, dockerd and sshd):
the engine answers through the forwarded socket, a container with ``network none`` and an
unprivileged uid on the node reaches a listener of the controller's through the
streamlocal forward, and a pulled cable (``ip link set … down``) ends the master."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from controller.runtime.docker.image import default_tag
from controller.runtime.docker.ssh import SshNode
from controller.runtime.nodes import parse_node
from tests.nodes import engines

pytestmark = pytest.mark.docker

AGENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect("/run/o16n/agent.sock")
s.sendall(b"hello from the node\\n")
sys.stdout.write(s.recv(100).decode())
"""


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="o16n-sl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def link(compute_nodes: list[engines.Node], root: Path) -> AsyncIterator[SshNode]:
    node = compute_nodes[0]
    ssh = SshNode(
        parse_node(node.ssh_entry),
        key_file=node.client_key,
        known_hosts=node.known_hosts,
        control_dir=root / "ctl",
    )
    try:
        await ssh.open()
        yield ssh
    finally:
        await ssh.close()


async def test_the_nodes_engine_answers_through_the_link(
    link: SshNode, compute_nodes: list[engines.Node], root: Path
) -> None:
    node = compute_nodes[0]
    assert await link.docker_host() == str(node.engine_socket)
    local = root / "engine.sock"
    await link.forward_local(local, await link.docker_host())
    client = docker.DockerClient(base_url=f"unix://{local}", version="auto", timeout=30)
    try:
        seen = await asyncio.to_thread(lambda: client.info()["ID"])
    finally:
        client.close()
    assert seen == node.docker("info", "--format", "{{.ID}}").stdout.strip()


async def test_a_container_without_network_reaches_the_controller(
    link: SshNode, compute_nodes: list[engines.Node], root: Path
) -> None:
    """The agent's path on a remote node: its socket directory mounted read-only, sshd
    listening there (mode 0666: the container's uid is nobody), each connection carried
    to the controller's own listener."""
    node = compute_nodes[0]
    sockets = root / "node" / "sockets" / "k1"
    await link.run(["mkdir", "-p", "-m", "0755", "--", str(sockets)])
    await link.run(["chmod", "0755", "--", str(root / "node"), str(sockets.parent)])
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readline())
        writer.write(b"controller says hi\n")
        await writer.drain()
        writer.close()

    listener = root / "controller.sock"
    server = await asyncio.start_unix_server(serve, str(listener))
    try:
        await link.forward_remote(str(sockets / "agent.sock"), listener)
        ran = await asyncio.to_thread(
            node.docker,
            *("run", "--rm", "--network", "none", "--user", "65534:65534", "--read-only"),
            *("-v", f"{sockets}:/run/o16n:ro", "--entrypoint", "/opt/o16n/bin/python"),
            *(default_tag(), "-c", AGENT),
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "controller says hi\n"
        assert got == [b"hello from the node\n"]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_pulled_cable_ends_the_master(
    link: SshNode, compute_nodes: list[engines.Node]
) -> None:
    """No RST, no FIN: only the keepalives going unanswered end it (about interval x count
    seconds), and a master opened once the cable is back works."""
    node = compute_nodes[0]
    node.cut_link()
    try:
        await asyncio.wait_for(link.wait_closed(), 30)
        assert not link.alive
    finally:
        node.restore_link()
    with contextlib.suppress(Exception):
        await link.close()
    await link.open()
    assert await link.run(["echo", "back"]) == b"back\n"
