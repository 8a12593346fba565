"""``SshNode`` against a real sshd on 127.0.0.1 (``tests/runtime/sshd.py``): the master
logs in with a pinned host key and a client key and never prompts, commands run through it
with bounded output, Unix sockets are forwarded both ways, and a cut link is seen.

No Docker: the "node" is this machine, reached through its own sshd, so a node's path is a
local path here. Skips, naming the package, without /usr/sbin/sshd (``make nodes``)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.errors import EngineUnavailable, RuntimeFailure
from controller.runtime.docker.ssh import SshNode, ensure_client_key
from controller.runtime.nodes import parse_node
from tests.runtime.sshd import SSHD, Sshd, running_sshd

pytestmark = pytest.mark.skipif(
    not SSHD.exists(), reason=f"{SSHD} is missing: install openssh-server (`make nodes`)"
)


@pytest.fixture
def root() -> Iterator[Path]:
    # Short on purpose: forwarded sockets and ssh's control socket go here (107 bytes at most)
    path = Path(tempfile.mkdtemp(prefix="o16n-ssh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sshd(root: Path, request: pytest.FixtureRequest) -> Iterator[Sshd]:
    docker_host = getattr(request, "param", "unix:///run/o16n-test/docker.sock")
    with running_sshd(root, docker_host=docker_host) as server:
        yield server


def make_node(server: Sshd, **changes: Any) -> SshNode:
    values: dict[str, Any] = {
        "key_file": server.client_key,
        "known_hosts": server.known_hosts,
        "control_dir": server.root / "ctl",
        "connect_timeout": 5.0,
    } | changes
    return SshNode(server.address, **values)


@pytest.fixture
async def node(sshd: Sshd) -> AsyncIterator[SshNode]:
    opened = make_node(sshd)
    try:
        await opened.open()
        yield opened
    finally:
        await opened.close()


@contextlib.asynccontextmanager
async def unix_server(path: Path, reply: bytes) -> AsyncIterator[list[bytes]]:
    """A Unix socket server that answers each line with ``reply`` + the line, and records
    the lines it got."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        got.append(line)
        writer.write(reply + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield got
    finally:
        server.close()
        await server.wait_closed()


async def ask(path: Path, line: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(line)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 10)
    finally:
        writer.close()


# -- the master ---------------------------------------------------------------------------


async def test_open_run_close(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "controller.runtime.docker.ssh")
    node = make_node(sshd)
    await node.open()
    assert node.alive and node.control_path.is_socket()
    started = [r for r in caplog.records if r.getMessage() == "ssh master started"]
    assert [r.__dict__["node"] for r in started] == [sshd.address.entry]
    await node.open()  # idempotent while it runs
    # each argument arrives as one word, unexpanded: argv is quoted for the node's shell
    words = ["printf", "%s|", "a b", "$HOME", "it's", "*", "; echo no"]
    assert await node.run(words) == b"a b|$HOME|it's|*|; echo no|"
    await node.close()
    assert (node.alive, node.control_path.exists()) == (False, False)
    assert any(r.getMessage() == "ssh master ended" for r in caplog.records)
    await node.close()  # idempotent
    with pytest.raises(EngineUnavailable, match=r"link .* is down"):
        await node.run(["true"])


async def test_a_failing_command_is_named_with_its_stderr(node: SshNode) -> None:
    with pytest.raises(RuntimeFailure, match=r"`sh -c .*` on ssh://.* failed \(exit 3\): oops"):
        await node.run(["sh", "-c", "echo oops >&2; exit 3"])
    # stderr is quoted cut short: its last lines only, control characters replaced
    noisy = "for i in $(seq 1000); do printf 'line %s\\033[31m\\n' $i >&2; done; exit 1"
    with pytest.raises(RuntimeFailure) as failed:
        await node.run(["sh", "-c", noisy])
    assert "line 1000?[31m" in failed.value.message and "line 990" not in failed.value.message
    assert "\x1b" not in failed.value.message and len(failed.value.message) < 2500


async def test_run_with_stdin(node: SshNode) -> None:
    data = bytes(range(256)) * 4000  # 1 MB, every byte value
    assert await node.run(["sha256sum"], stdin=data) == (
        hashlib.sha256(data).hexdigest().encode() + b"  -\n"
    )

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(50):
            yield f"chunk {i}\n".encode()
            await asyncio.sleep(0)

    out = await node.run(["cat"], stdin=chunks())
    assert out == b"".join(f"chunk {i}\n".encode() for i in range(50))
    assert await node.run(["cat"]) == b""  # no stdin: the command reads an end at once


async def test_a_command_that_stops_reading_its_stdin(node: SshNode) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"y" * 65536

    assert await node.run(["head", "-c", "10"], stdin=endless(), timeout=20) == b"y" * 10
    assert await node.run(["true"], stdin=b"x" * (8 << 20), timeout=20) == b""


async def test_output_is_bounded(node: SshNode) -> None:
    assert len(await node.run(["head", "-c", "5000", "/dev/zero"], limit=5000)) == 5000
    with pytest.raises(RuntimeFailure, match="wrote more than 4999 bytes"):
        await node.run(["head", "-c", "5000", "/dev/zero"], limit=4999)
    with pytest.raises(RuntimeFailure, match="wrote more than 1000 bytes"):
        await node.run(["cat", "/dev/zero"], limit=1000)  # endless: killed, not waited for
    assert await node.run(["echo", "still here"]) == b"still here\n"


async def test_commands_past_the_servers_session_limit_wait(node: SshNode) -> None:
    """sshd's MaxSessions (10) would refuse the eleventh command at once: they queue."""
    words = [f"w{i}" for i in range(24)]
    outs = await asyncio.gather(*(node.run(["sh", "-c", "sleep 0.3; echo $0", w]) for w in words))
    assert outs == [f"{w}\n".encode() for w in words]


async def test_a_command_past_its_timeout_is_killed(node: SshNode, sshd: Sshd) -> None:
    before = len(sshd.processes())
    with pytest.raises(RuntimeFailure, match=r"`sleep 60` .* took longer than 0.5 s"):
        await node.run(["sleep", "60"], timeout=0.5)
    assert await node.run(["echo", "still here"]) == b"still here\n"
    # the command ends on the node too (sshd would leave it running: timeout ends it there
    # a second after ours), and sshd's session with it
    for _ in range(100):
        if len(sshd.processes()) <= before:
            break
        await asyncio.sleep(0.1)
    assert len(sshd.processes()) <= before


async def test_an_unknown_host_key_is_refused(
    sshd: Sshd, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "controller.runtime.docker.ssh")
    other = root / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    pinned = root / "pinned_hosts"
    pinned.write_text(f"[127.0.0.1]:{sshd.port} " + (root / "other.pub").read_text())
    node = make_node(sshd, known_hosts=pinned)
    with pytest.raises(EngineUnavailable, match="Host key verification failed"):
        await asyncio.wait_for(node.open(), 30)
    assert not node.alive
    # a login that failed is not reported as a link that went down
    assert [r.getMessage() for r in caplog.records] == ["ssh master could not log in"]
    empty = root / "empty_hosts"
    empty.touch()  # no key for the host at all: refused too, no "accept new key"
    with pytest.raises(EngineUnavailable, match="Host key verification failed"):
        await asyncio.wait_for(make_node(sshd, known_hosts=empty).open(), 30)
    await node.close()


async def test_a_missing_or_unauthorised_key_is_refused(sshd: Sshd, root: Path) -> None:
    with pytest.raises(EngineUnavailable, match=r"client key .*/nothing does not exist"):
        await make_node(sshd, key_file=root / "nothing").open()
    stranger = root / "stranger" / "id"
    ensure_client_key(stranger)
    node = make_node(sshd, key_file=stranger)
    with pytest.raises(EngineUnavailable, match=r"Permission denied \(publickey\)"):
        await asyncio.wait_for(node.open(), 30)  # BatchMode: no passphrase or password prompt
    assert not node.alive


async def test_a_node_that_does_not_answer_is_given_up(sshd: Sshd, root: Path) -> None:
    """Nothing listening: refused at once. A listener that never says a word (a node whose
    sshd hangs): given up after the connect timeout, not waited on for ever."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts; nobody reads or writes
        port = silent.getsockname()[1]
        address = parse_node(f"ssh://{sshd.user}@127.0.0.1:{port}")
        node = SshNode(
            address,
            key_file=sshd.client_key,
            known_hosts=sshd.known_hosts,
            control_dir=root / "ctl",
            connect_timeout=1,
        )
        with pytest.raises(EngineUnavailable, match="banner exchange"):
            await asyncio.wait_for(node.open(), 20)
    with pytest.raises(EngineUnavailable, match="Connection refused"):
        await asyncio.wait_for(node.open(), 20)
    assert not node.alive


async def test_files_others_could_change_are_refused(sshd: Sshd) -> None:
    sshd.client_key.chmod(0o640)
    with pytest.raises(EngineUnavailable, match=r"client key .* readable or writable by other"):
        await make_node(sshd).open()
    sshd.client_key.chmod(0o600)
    sshd.known_hosts.chmod(0o664)
    with pytest.raises(EngineUnavailable, match=r"known_hosts .* writable by other users"):
        await make_node(sshd).open()
    sshd.known_hosts.chmod(0o644)
    node = make_node(sshd)
    await node.open()
    await node.close()


async def test_a_control_path_too_long_is_named(sshd: Sshd) -> None:
    deep = sshd.root / ("d" * 90)
    with pytest.raises(EngineUnavailable, match=r"control socket .* too long"):
        await make_node(sshd, control_dir=deep).open()


async def test_a_stale_control_socket_is_replaced(sshd: Sshd) -> None:
    """A controller that died leaves its master and control socket: the next one's master
    tells it to exit and takes the path."""
    first = make_node(sshd)
    await first.open()
    second = make_node(sshd)
    await second.open()
    await asyncio.wait_for(first.wait_closed(), 10)
    assert second.alive and await second.run(["echo", "ok"]) == b"ok\n"
    await second.close()
    await first.close()


async def test_a_new_master_after_the_link_went(sshd: Sshd) -> None:
    node = make_node(sshd)
    await node.open()
    sshd.signal_connections(signal.SIGKILL)
    await asyncio.wait_for(node.wait_closed(), 10)
    await node.open()
    assert await node.run(["echo", "again"]) == b"again\n"
    await node.close()


# -- a cut link ---------------------------------------------------------------------------


async def test_a_killed_server_ends_the_master(node: SshNode, sshd: Sshd) -> None:
    sshd.stop()
    await asyncio.wait_for(node.wait_closed(), 10)
    assert not node.alive
    with pytest.raises(EngineUnavailable, match=r"link .* is down"):
        await node.run(["true"])
    with pytest.raises(EngineUnavailable):
        await node.forward_remote(str(sshd.root / "r.sock"), sshd.root / "l.sock")


async def test_a_silent_link_ends_the_master(
    node: SshNode, sshd: Sshd, caplog: pytest.LogCaptureFixture
) -> None:
    """The node's side stops answering (its sshd frozen, as a cut cable would look): the
    master's keepalives go unanswered and it ends within about interval x count seconds."""
    caplog.set_level(logging.INFO, "controller.runtime.docker.ssh")
    sshd.signal_connections(signal.SIGSTOP)
    await asyncio.wait_for(node.wait_closed(), 20)
    assert not node.alive
    ended = [r for r in caplog.records if r.getMessage().startswith("ssh master ended by itself")]
    assert ended and "not responding" in ended[0].__dict__["stderr"]


# -- forwarding ---------------------------------------------------------------------------


async def test_forward_local_reaches_a_socket_on_the_node(node: SshNode, root: Path) -> None:
    remote, local = root / "engine.sock", root / "local.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(local))  # a socket left by an earlier controller: replaced
    stale.close()
    async with unix_server(remote, b"engine:") as got:
        await node.forward_local(local, str(remote))
        assert await ask(local, b"ping\n") == b"engine:ping\n"
        assert await ask(local, b"again\n") == b"engine:again\n"
        assert got == [b"ping\n", b"again\n"]
    await node.close()
    assert not local.exists()  # close removes the sockets it forwarded


async def test_forward_local_refuses_what_is_not_a_socket(node: SshNode, root: Path) -> None:
    (root / "file").write_text("mine")
    with pytest.raises(RuntimeFailure, match="not a socket"):
        await node.forward_local(root / "file", str(root / "engine.sock"))
    assert (root / "file").read_text() == "mine"
    with pytest.raises(RuntimeFailure, match="':'"):
        await node.forward_local(root / "a:b", str(root / "engine.sock"))
    with pytest.raises(RuntimeFailure, match="at most 107"):
        await node.forward_local(root / ("x" * 100), str(root / "engine.sock"))


async def test_forward_remote_carries_the_node_socket_to_a_local_listener(
    node: SshNode, root: Path
) -> None:
    sockets = root / "node" / "sockets" / "k1"
    await node.run(["mkdir", "-p", str(sockets)])
    remote, local = sockets / "agent.sock", root / "controller.sock"
    async with unix_server(local, b"controller:") as got:
        await node.forward_remote(str(remote), local)
        # StreamLocalBindMask 0111: a container's uid, whatever it is, may connect
        assert stat.S_IMODE(remote.stat().st_mode) == 0o666
        assert await ask(remote, b"hello\n") == b"controller:hello\n"
        assert got == [b"hello\n"]
        await node.cancel_remote(str(remote), local)
        with pytest.raises(OSError):  # refused, or the socket gone
            await ask(remote, b"after\n")
        await node.cancel_remote(str(remote), local)  # idempotent
        assert got == [b"hello\n"]
        # and again: sshd replaces the socket file the cancelled forward left
        await node.forward_remote(str(remote), local)
        assert await ask(remote, b"back\n") == b"controller:back\n"


async def test_a_failed_remote_forward_leaves_the_master_up(node: SshNode, root: Path) -> None:
    with pytest.raises(RuntimeFailure, match=r"forward -R .* failed"):
        await node.forward_remote(str(root / "no" / "such" / "dir.sock"), root / "c.sock")
    assert node.alive and await node.run(["echo", "up"]) == b"up\n"


# -- the node's engine --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sshd", "expected"),
    [
        ("unix:///run/o16n-test/docker.sock", "/run/o16n-test/docker.sock"),
        (None, "/var/run/docker.sock"),
    ],
    indirect=["sshd"],
)
async def test_docker_host_follows_the_nodes_docker_host(node: SshNode, expected: str) -> None:
    assert await node.docker_host() == expected


@pytest.mark.parametrize("sshd", ["tcp://10.0.0.1:2375"], indirect=True)
async def test_a_tcp_docker_host_is_refused(node: SshNode) -> None:
    with pytest.raises(RuntimeFailure, match=r"'tcp://10.0.0.1:2375' is not a unix:// socket"):
        await node.docker_host()


# -- the client key -----------------------------------------------------------------------


def test_ensure_client_key(root: Path) -> None:
    key = root / "data" / "ssh" / "id_ed25519"
    public = ensure_client_key(key)
    assert public.startswith("ssh-ed25519 ") and public.endswith(" o16n-controller")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert ensure_client_key(key) == public  # kept, not replaced
    key.with_name("id_ed25519.pub").unlink()
    assert ensure_client_key(key).split()[:2] == public.split()[:2]  # derived from the key


# -- the node's engine, through the link --------------------------------------------------

LOCAL_ENGINE = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@pytest.mark.docker
@pytest.mark.parametrize("sshd", [LOCAL_ENGINE], indirect=True)
async def test_the_engine_answers_through_the_forwarded_socket(node: SshNode, root: Path) -> None:
    """What the multi-node engine does: find the node's engine socket, forward it, and talk
    Docker's API to the local end (here the node is this machine: its engine is ours)."""
    if not LOCAL_ENGINE.startswith("unix://"):
        pytest.skip(f"DOCKER_HOST={LOCAL_ENGINE} is not a Unix socket")
    local = root / "engine.sock"
    await node.forward_local(local, await node.docker_host())
    client = docker.DockerClient(base_url=f"unix://{local}", version="auto", timeout=30)
    try:
        direct = docker.DockerClient(base_url=LOCAL_ENGINE, version="auto", timeout=30)
        try:
            expected = await asyncio.to_thread(lambda: direct.info()["ID"])
        finally:
            direct.close()
        assert await asyncio.to_thread(lambda: client.info()["ID"]) == expected
    finally:
        client.close()
