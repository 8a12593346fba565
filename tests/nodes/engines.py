"""Compute nodes for tests: real Docker engines reached over SSH, one network namespace each.

A node is what an operator's compute node is, on this machine: a network namespace of its
own (a veth pair to the host, 10.213.<k>.1 on the host's side, 10.213.<k>.2 on the node's),
a containerd and a ``dockerd`` with their own roots, pid files, sockets and cgroup parent
(the data root a tmpfs unless asked otherwise), and an ``sshd`` on 10.213.<k>.2:22 that
only takes one client key (generated) and whose host key is pinned in a ``known_hosts`` of
its own. Its sshd sets ``DOCKER_HOST`` to the node's engine socket, the convention
``docker -H ssh://`` follows.

The daemons run with ``nsenter --net``, not ``ip netns exec``: the latter also makes a mount
namespace of its own and mounts a fresh ``/sys`` there, hiding ``/sys/fs/cgroup`` from dockerd.
So the engines' mounts are the host's, and :func:`stop_node` unmounts them.

Everything a node starts is recorded in its directory (``node.json``) as it goes, and
:func:`stop_node` undoes exactly that, whatever state a start or a test left it in. It
signals the daemons it recorded (its own children, or, for a node of a dead run, a pid
whose command line still names the node's directory), then what is left in the node's
own namespace or cgroups and its containerd's shims; never a process by name.
:func:`sweep_stale` does the same for nodes whose test process died without cleaning up.

No pytest here: the fixtures (``conftest.py``) and benches use it alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Where nodes keep their files: short (Unix socket paths max out at 107 bytes), root-only
#: path components (sshd's StrictModes refuses keys under a world-writable /tmp), and, for
#: a data root on disk, the same disk as Docker's own (overlay2 cannot stack on overlay).
BASE = Path("/var/lib/o16t")
#: Network namespaces and cgroup parents of test nodes are named this and the node's id.
PREFIX = "o16n-t-"
#: The /16 the nodes' veth pairs take their /30s from: 10.213.<k>.0/30, k in 1..254.
SUBNET = "10.213"
SSHD = "/usr/sbin/sshd"
#: Where containerd's shims put their sockets, whichever containerd started them.
SHIM_SOCKETS = Path("/run/containerd/s")
#: One allocation of k at a time, across test processes (pytest-xdist workers, helpers).
_LOCK = BASE / ".lock"
#: The daemons this process started, by pid: kept so that they are reaped (and a running
#: one's Popen is not collected, which warns).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class NodeError(RuntimeError):
    """A node did not start or stop as it should (the message says which step, and logs)."""


@dataclass
class Node:
    """One started compute node (see the module's docstring). ``pids`` and ``k`` are what
    :func:`stop_node` undoes; everything else derives from ``id``."""

    id: str
    k: int = 0
    owner_pid: int = 0
    owner_start: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    #: what was made: "netns", "veth", "cgroup" (stop_node undoes only those)
    made: list[str] = field(default_factory=list)
    #: the client's private key, if not the node's own (nodes started together share one,
    #: as a controller has one ``O16N_SSH_KEY`` for all its nodes)
    key: str = ""

    @property
    def name(self) -> str:
        """The node's network namespace, also its cgroup parent's name."""
        return PREFIX + self.id

    @property
    def dir(self) -> Path:
        """The node's data directory: everything it keeps, nothing outside but /run/sshd."""
        return BASE / self.id

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.k}.2"

    @property
    def host_address(self) -> str:
        return f"{SUBNET}.{self.k}.1"

    @property
    def ssh_entry(self) -> str:
        """The node as a ``/computenodes`` entry (``DOCKER_HOST`` convention)."""
        return f"ssh://root@{self.address}"

    @property
    def engine_socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def client_key(self) -> Path:
        """The private key the node's sshd accepts (root), 0600."""
        return Path(self.key) if self.key else self.dir / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """One line pinning the node's host key at its address."""
        return self.dir / "ssh" / "known_hosts"

    @property
    def host_veth(self) -> str:
        return f"o16n{self.id}h"

    @property
    def node_veth(self) -> str:
        return f"o16n{self.id}n"

    @property
    def data_root(self) -> Path:
        return self.dir / "data"

    @property
    def exec_root(self) -> Path:
        return self.dir / "x"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "c" / "containerd.sock"

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: Any = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this node's engine (its socket, not over SSH)."""
        return _run(
            ["docker", "-H", f"unix://{self.engine_socket}", *args],
            check=check,
            timeout=timeout,
            stdin=stdin,
        )

    def ssh_command(self, *remote: str, known_hosts: Path | None = None) -> list[str]:
        """``ssh`` to the node as the controller does: pinned host key, the client key only,
        never a prompt; ``remote`` is the command line to run there."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=5",
            "-i",
            str(self.client_key),
            f"root@{self.address}",
            *remote,
        ]

    def cut_link(self) -> None:
        """Take the node off the network, as a pulled cable would (its daemons run on)."""
        _run(["ip", "link", "set", self.host_veth, "down"])

    def restore_link(self) -> None:
        _run(["ip", "link", "set", self.host_veth, "up"])

    def _save(self) -> None:
        (self.dir / "node.json").write_text(json.dumps(asdict(self)))


def start_node(
    log: Callable[[str], None] | None = None,
    *,
    in_memory: bool = True,
    client_key: Path | None = None,
) -> Node:
    """Start a node: namespace and veth, sshd, containerd, dockerd; wait until the engine
    and sshd answer. On any failure, undo what was done and raise :class:`NodeError`.

    ``in_memory``: the engine's data root is a tmpfs (what its images and containers take,
    some 0.7 GB of memory with the runtime image), which loads the image two to four times
    as fast as this machine's disk did and frees it at once. ``client_key``: the private
    key (its ``.pub`` beside it) the node accepts; by default one of its own."""
    say = log or (lambda _: None)
    BASE.mkdir(mode=0o755, exist_ok=True)
    me = os.getpid()
    node = Node(
        id=secrets.token_hex(3),
        owner_pid=me,
        owner_start=_start_time(me),
        key=str(client_key or ""),
    )
    node.dir.mkdir(mode=0o755)
    node._save()
    try:
        started = time.monotonic()
        _network(node)
        _sshd(node)
        _engine(node, in_memory)
        _wait_for_ssh(node)
        say(f"node {node.name} at {node.address} up in {time.monotonic() - started:.1f} s")
    except BaseException:
        with contextlib.suppress(Exception):
            stop_node(node)
        raise
    return node


def start_nodes(
    count: int,
    log: Callable[[str], None] | None = None,
    *,
    in_memory: bool = True,
    client_key: Path | None = None,
) -> list[Node]:
    """Start ``count`` nodes side by side (each mostly waits on its daemons); if one fails,
    stop those that started and raise."""
    results: list[Node | BaseException] = [NodeError("not started")] * count

    def one(i: int) -> None:
        try:
            results[i] = start_node(log, in_memory=in_memory, client_key=client_key)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    nodes = [r for r in results if isinstance(r, Node)]
    failures = [r for r in results if not isinstance(r, Node)]
    if failures:
        for node in nodes:
            with contextlib.suppress(Exception):
                stop_node(node)
        raise failures[0]
    return nodes


@contextlib.contextmanager
def running_nodes(
    count: int,
    log: Callable[[str], None] | None = None,
    *,
    in_memory: bool = True,
    client_key: Path | None = None,
) -> Iterator[list[Node]]:
    """``count`` started nodes, stopped on the way out whatever happened in between."""
    nodes = start_nodes(count, log, in_memory=in_memory, client_key=client_key)
    try:
        yield nodes
    finally:
        errors: list[str] = []
        for node in nodes:
            try:
                stop_node(node)
            except NodeError as exc:
                errors.append(str(exc))
        if errors:
            raise NodeError("; ".join(errors))


def load_image(nodes: Sequence[Node], tag: str) -> float:
    """Copy the image ``tag`` from the host's engine (``DOCKER_HOST``) into each node's:
    one ``docker save`` streamed into every node's ``docker load`` (chunk by chunk, never
    the whole image in memory). Returns the seconds it took."""
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        errors = [stack.enter_context(tempfile.TemporaryFile()) for _ in nodes]
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        stack.callback(_finish, save)
        loads = []
        for node, err in zip(nodes, errors, strict=True):
            load = subprocess.Popen(
                ["docker", "-H", f"unix://{node.engine_socket}", "load", "-q"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            stack.callback(_finish, load)
            loads.append(load)
        assert save.stdout is not None
        try:
            while chunk := save.stdout.read(1 << 20):
                for load in loads:
                    assert load.stdin is not None
                    load.stdin.write(chunk)
            for load in loads:
                assert load.stdin is not None
                load.stdin.close()
        except BrokenPipeError:
            pass  # a load that failed: its exit status and message follow
        for node, load, err in zip(nodes, loads, errors, strict=True):
            if load.stdin is not None and not load.stdin.closed:
                load.kill()  # the copy stopped half way
            if load.wait(timeout=600) != 0:
                err.seek(0)
                message = err.read().decode(errors="replace")[-2000:]
                raise NodeError(f"docker load into {node.name} failed: {message}")
        if save.wait(timeout=60) != 0:
            raise NodeError(f"docker save {tag} failed ({save.returncode})")
    return time.monotonic() - started


def _finish(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` if it still runs (a failed copy), and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


#: The tag of :func:`tiny_image`.
TINY_IMAGE = "o16n-t-tiny:latest"


def tiny_image(node: Node) -> str:
    """Import a 2 MB image into ``node``'s engine, for tests that need a container and not
    the runtime (``docker run TINY_IMAGE 600`` sleeps): this machine's ``sleep`` and the
    libraries it links. Seconds, where loading the runtime image takes twenty."""
    files = ["/bin/sleep"]
    for line in _run(["ldd", "/bin/sleep"]).stdout.splitlines():
        path = next((word for word in line.split() if word.startswith("/")), None)
        if path:
            files.append(path)
    with tempfile.TemporaryFile() as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for path in files:
                tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
        archive.seek(0)
        node.docker(
            *("import", "--change", 'ENTRYPOINT ["/bin/sleep"]', "-", TINY_IMAGE),
            stdin=archive,
        )
    return TINY_IMAGE


def stop_node(node: Node) -> None:
    """Undo everything ``node`` recorded, each step even when an earlier one failed: its
    engine's containers, its daemons (their pids, checked), what is left in its namespace,
    its mounts, cgroups, veth, namespace and directory. Raises :class:`NodeError` naming
    what could not be undone."""
    errors: list[str] = []

    def step(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:
            errors.append(f"{what}: {exc}")

    step("containers", lambda: _remove_containers(node))
    for daemon in ("sshd", "dockerd", "containerd"):
        step(daemon, functools.partial(_stop_pid, node, daemon))
    step("processes", lambda: _kill_node_processes(node))
    step("shim sockets", lambda: _remove_shim_sockets(node))
    step("mounts", lambda: _unmount_under(node.dir))
    step("cgroups", lambda: _remove_cgroups(node))
    step("network", lambda: _remove_network(node))
    if not errors:  # (--one-file-system: never through a mount that is somehow still there)
        step("directory", lambda: _run(["rm", "-rf", "--one-file-system", str(node.dir)]))
    if errors:
        raise NodeError(f"node {node.name} not fully cleaned up: " + "; ".join(errors))


def sweep_stale(log: Callable[[str], None] | None = None) -> list[str]:
    """Stop the nodes under :data:`BASE` whose test process is gone (a killed run): only
    those this module recorded, and only what they recorded. Returns their names."""
    swept: list[str] = []
    if not BASE.is_dir():
        return swept
    for record in sorted(BASE.glob("*/node.json")):
        try:
            node = Node(**json.loads(record.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if node.dir != record.parent or _start_time(node.owner_pid) == node.owner_start:
            continue  # not ours, or its test process still runs
        try:
            stop_node(node)
            swept.append(node.name)
        except NodeError as exc:
            if log:
                log(str(exc))
    return swept


# -- starting ---------------------------------------------------------------------------


def make_key(path: Path, comment: str = "o16n test") -> Path:
    """A new ed25519 key pair at ``path`` (private, 0600) and ``path``.pub."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path


def write_known_hosts(nodes: Iterable[Node], path: Path) -> Path:
    """One ``known_hosts`` pinning every node's host key (``O16N_SSH_KNOWN_HOSTS``)."""
    path.write_text("".join(node.known_hosts.read_text() for node in nodes))
    return path


def _network(node: Node) -> None:
    """The namespace, and a veth pair on a free 10.213.<k>.0/30 (chosen under a lock)."""
    _run(["ip", "netns", "add", node.name])
    node.made.append("netns")
    node._save()
    _run(["ip", "netns", "exec", node.name, "ip", "link", "set", "lo", "up"])
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = _run(["ip", "-4", "-o", "addr", "show"]).stdout
        node.k = next(
            k for k in range(1, 255) if f" {SUBNET}.{k}." not in taken
        )  # StopIteration: 254 nodes at once is a leak, not a test
        node._save()
        _run(
            [
                *("ip", "link", "add", node.host_veth, "type", "veth"),
                *("peer", "name", node.node_veth, "netns", node.name),
            ]
        )
        node.made.append("veth")
        node._save()
        _run(["ip", "addr", "add", f"{node.host_address}/30", "dev", node.host_veth])
    _run(["ip", "link", "set", node.host_veth, "up"])
    _run(["ip", "-n", node.name, "addr", "add", f"{node.address}/30", "dev", node.node_veth])
    _run(["ip", "-n", node.name, "link", "set", node.node_veth, "up"])


def _sshd(node: Node) -> None:
    """Keys (host and client), known_hosts, sshd_config; sshd in the node's namespace."""
    ssh = node.dir / "ssh"
    ssh.mkdir(mode=0o700)
    host_key = ssh / "host_ed25519"
    for key in (host_key, node.client_key):
        if not key.exists():
            make_key(key, node.name)
    # a copy: sshd's StrictModes refuses a key file in a world-writable directory
    authorized = ssh / "authorized_keys"
    shutil.copyfile(f"{node.client_key}.pub", authorized)
    kind, blob = host_key.with_suffix(".pub").read_text().split()[:2]
    node.known_hosts.write_text(f"{node.address} {kind} {blob}\n")
    config = ssh / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {node.address}:22",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {node.dir / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StreamLocalBindUnlink yes",
                "StreamLocalBindMask 0111",
                "AllowStreamLocalForwarding yes",
                "AllowTcpForwarding yes",
                "X11Forwarding no",
                "PrintMotd no",
                f"SetEnv DOCKER_HOST=unix://{node.engine_socket}",
                "",
            ]
        )
    )
    # sshd's privilege separation directory; the openssh-server package's service makes
    # it, and this machine's sshd is not running as a service.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    _run([SSHD, "-t", "-f", str(config)])
    _spawn(node, "sshd", [SSHD, "-D", "-e", "-f", str(config)])


def _engine(node: Node, in_memory: bool) -> None:
    """containerd (its own: never the host's, whose namespaces another engine uses) and
    dockerd on it, in the node's namespace; returns once the engine answers."""
    cdir = node.containerd_socket.parent
    cdir.mkdir(mode=0o711)
    config = cdir / "config.toml"
    config.write_text(
        "\n".join(
            [
                "version = 2",
                f'root = "{cdir / "root"}"',
                f'state = "{cdir / "state"}"',
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                "[grpc]",
                f'  address = "{node.containerd_socket}"',
                "[debug]",
                '  address = ""',
                "[plugins]",
                '  [plugins."io.containerd.internal.v1.opt"]',
                f'    path = "{cdir / "opt"}"',
                "",
            ]
        )
    )
    _spawn(node, "containerd", ["containerd", "--config", str(config)])
    _wait(lambda: node.containerd_socket.exists(), 30, node, "containerd")
    (node.dir / "daemon.json").write_text("{}\n")
    if in_memory:
        node.data_root.mkdir(mode=0o711)
        _run(["mount", "-t", "tmpfs", "-o", "mode=0711", "tmpfs", str(node.data_root)])
    node.made.append("cgroup")
    node._save()
    _spawn(
        node,
        "dockerd",
        [
            "dockerd",
            "--config-file",
            str(node.dir / "daemon.json"),
            "--data-root",
            str(node.data_root),
            "--exec-root",
            str(node.exec_root),
            "--pidfile",
            str(node.dir / "docker.pid"),
            "-H",
            f"unix://{node.engine_socket}",
            "--containerd",
            str(node.containerd_socket),
            "--cgroup-parent",
            f"/{node.name}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
        ],
    )
    _wait(
        lambda: (
            node.engine_socket.exists()
            and node.docker("version", check=False, timeout=10).returncode == 0
        ),
        60,
        node,
        "dockerd",
    )


def _wait_for_ssh(node: Node) -> None:
    def banner() -> bool:
        try:
            with socket.create_connection((node.address, 22), timeout=2) as conn:
                return conn.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    _wait(banner, 30, node, "sshd")


def _spawn(node: Node, daemon: str, argv: list[str]) -> None:
    """Start a daemon in the node's namespace, in a session of its own (a Ctrl-C on the test
    run leaves stopping it to the cleanup, in order), logging to ``<dir>/<daemon>.log``."""
    with (node.dir / f"{daemon}.log").open("ab") as out:
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{node.name}", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    node.pids[daemon] = proc.pid  # nsenter execs the daemon: the same pid
    node._save()


def _wait(ready: Callable[[], bool], seconds: float, node: Node, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        for daemon, pid in node.pids.items():
            if not _ours(node, pid):
                raise NodeError(f"{node.name}: {daemon} exited; {_tail(node, daemon)}")
        time.sleep(0.1)
    raise NodeError(f"{node.name}: {what} not ready in {seconds} s; {_tail(node, what)}")


def _tail(node: Node, daemon: str) -> str:
    log = node.dir / f"{daemon}.log"
    try:
        return f"{log}: " + log.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


# -- stopping ---------------------------------------------------------------------------


def _remove_containers(node: Node) -> None:
    pid = node.pids.get("dockerd")
    if pid is None or not _ours(node, pid) or not node.engine_socket.exists():
        return
    listed = node.docker("ps", "-aq", check=False, timeout=30)
    ids = listed.stdout.split()
    if listed.returncode == 0 and ids:  # an engine gone: the next steps clean up after it
        node.docker("rm", "-f", *ids, timeout=120)


def _stop_pid(node: Node, daemon: str, grace: float = 20) -> None:
    """SIGTERM the recorded daemon, if that pid still runs a command naming the node's
    directory (a reused pid is someone else's), then SIGKILL after ``grace`` seconds."""
    pid = node.pids.get(daemon)
    if pid is None:
        return
    if _ours(node, pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _ours(node, pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _ours(node, pid):
            os.kill(pid, signal.SIGKILL)
            _wait_gone(node, [pid])
    _reap(pid)
    del node.pids[daemon]
    node._save()


def _kill_node_processes(node: Node) -> None:
    """What still runs in the node's namespace (shims, sshd's sessions), in its cgroups
    (containers whose engine died), or is a shim of its containerd (once the namespace is
    gone) is the node's: kill it. (Not every process naming the node's files: a test's ssh
    client to the node is the test's.)"""
    shim = f"-address {node.containerd_socket} "
    pids = {pid for pid in _all_pids() if _cmdline_has(pid, shim)}
    if "netns" in node.made and Path(f"/run/netns/{node.name}").exists():
        pids.update(int(p) for p in _run(["ip", "netns", "pids", node.name]).stdout.split())
    if "cgroup" in node.made:
        for parent in cgroups_of(node):
            for procs in parent.rglob("cgroup.procs"):
                pids.update(int(p) for p in procs.read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(node, pids)


def shim_sockets(node: Node) -> list[Path]:
    """The sockets of the node's containerd shims, which containerd 1.6 keeps outside its
    state, in ``/run/containerd/s/``, named by a hash of the containerd address, namespace
    and container (a shim that is killed leaves its socket there)."""
    tasks = node.containerd_socket.parent / "state" / "io.containerd.runtime.v2.task"
    found: list[Path] = []
    for task in tasks.glob("*/*"):
        key = str(node.containerd_socket / task.parent.name / task.name).encode()
        path = SHIM_SOCKETS / hashlib.sha256(key).hexdigest()
        if path.is_socket():
            found.append(path)
    return found


def _remove_shim_sockets(node: Node) -> None:
    for path in shim_sockets(node):
        path.unlink(missing_ok=True)


def _unmount_under(root: Path) -> None:
    """Unmount every mount point under ``root``, deepest first (lazily if busy)."""
    for point in sorted(mounts_under(root), key=lambda p: len(p.parts), reverse=True):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            _run(["umount", "-l", str(point)])


def mounts_under(root: Path) -> list[Path]:
    """This mount namespace's mount points at or under ``root`` (``/proc/self/mountinfo``)."""
    prefix = str(root).rstrip("/") + "/"
    points: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == prefix[:-1] or point.startswith(prefix):
            points.append(Path(point))
    return points


def _unescape(field_: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and field_[i + 1 : i + 4].isdigit():
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def cgroups_of(node: Node) -> list[Path]:
    """The node's cgroup parent in each hierarchy (v1 controllers, or v2's one tree)."""
    root = Path("/sys/fs/cgroup")
    found = [root / node.name] if (root / node.name).is_dir() else []
    return found + [d / node.name for d in root.iterdir() if (d / node.name).is_dir()]


def _remove_cgroups(node: Node) -> None:
    if "cgroup" not in node.made:
        return
    for parent in cgroups_of(node):
        for path in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                path.rmdir()
        parent.rmdir()


def _remove_network(node: Node) -> None:
    if "veth" in node.made and Path(f"/sys/class/net/{node.host_veth}").exists():
        _run(["ip", "link", "del", node.host_veth])  # takes its peer along
    if "netns" in node.made and Path(f"/run/netns/{node.name}").exists():
        _run(["ip", "netns", "del", node.name])


# -- processes --------------------------------------------------------------------------


def _ours(node: Node, pid: int) -> bool:
    """Whether the node's daemon ``pid`` still runs. A child of this process keeps its pid
    until reaped; any other (a node of a run that died) is the node's only if its command
    line names the node's directory, which only its daemons' do: a pid reused since is left
    alone. (sshd rewrites its command line as it starts: no use for the first.)"""
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return _alive(pid) and _cmdline_has(pid, f"{node.dir}/")


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return text.encode() in cmdline.replace(b"\0", b" ") + b" "


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _reap(pid: int) -> None:
    """Collect the exit of a daemon this process started (else it lingers as a zombie)."""
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]


def _wait_gone(node: Node, pids: Iterable[int], seconds: float = 10) -> None:
    pending = list(pids)
    deadline = time.monotonic() + seconds
    while pending and time.monotonic() < deadline:
        for pid in pending:
            _reap(pid)
        pending = [pid for pid in pending if _alive(pid)]
        time.sleep(0.05)
    if pending:
        raise NodeError(f"{node.name}: pids {pending} did not exit")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_time(pid: int) -> str:
    """A process's start time (pid plus this is a process's identity; pids get reused)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _run(
    argv: list[str], *, check: bool = True, timeout: float = 60, stdin: Any = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=stdin, check=False
    )
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tests.nodes.engines [COUNT]``: start nodes by hand (to try a controller
    against them), print the settings that reach them, stop them on Ctrl-C or SIGTERM."""
    import argparse  # (only for this entry point)

    parser = argparse.ArgumentParser(prog="python -m tests.nodes.engines", description=main.__doc__)
    parser.add_argument("count", type=int, nargs="?", default=2, help="how many nodes (2)")
    parser.add_argument("--image", help="an image of the host's engine to load into each")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="o16n-nodes-") as folder:
        key = make_key(Path(folder) / "id_ed25519")
        with running_nodes(args.count, print, client_key=key) as nodes:
            if args.image:
                print(f"{args.image} loaded in {load_image(nodes, args.image):.1f} s")
            known = write_known_hosts(nodes, Path(folder) / "known_hosts")
            print(f"O16N_COMPUTE_NODES='{' '.join(node.ssh_entry for node in nodes)}'")
            print(f"O16N_SSH_KEY={key}")
            print(f"O16N_SSH_KNOWN_HOSTS={known}")
            print("Ctrl-C stops the nodes", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()


if __name__ == "__main__":
    main()
