"""A real OpenSSH server for tests: ``running_sshd(root)`` starts ``/usr/sbin/sshd`` on
127.0.0.1 at a free port, with a host key and a client key of its own, and stops it, with
every process it forked, however the test ends.

Its configuration is what a compute node's sshd needs (docs: ``StreamLocalBindUnlink yes``,
``StreamLocalBindMask 0111``, key logins only, ``SetEnv DOCKER_HOST=…``), plus ``StrictModes
no``: the keys live under /tmp, which sshd's strict modes refuse. The helper installs
nothing: it raises, naming the package, when sshd is missing.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from controller.runtime.docker.ssh import ensure_client_key
from controller.runtime.nodes import NodeAddress, parse_node

SSHD = Path("/usr/sbin/sshd")


@dataclass
class Sshd:
    """One running server and what a client needs to reach it."""

    root: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str
    process: subprocess.Popen[bytes]
    _killed: set[int] = field(default_factory=set)

    @property
    def address(self) -> NodeAddress:
        return parse_node(f"ssh://{self.user}@127.0.0.1:{self.port}")

    @property
    def log(self) -> str:
        """What sshd logged (``-e``): why it refused a login, say."""
        return (self.root / "sshd.log").read_text(errors="replace")

    def processes(self) -> list[int]:
        """The server's pid and those of every process it forked (connections, sessions)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def signal_connections(self, signum: int) -> None:
        """Signal the processes serving connections, not the listener: SIGSTOP makes a link
        that carries nothing any more (as a cut cable would), SIGKILL one that ends."""
        for pid in self.processes()[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        """End the server and everything it forked (idempotent)."""
        pids = self.processes() if self.process.poll() is None else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "o16n-test-host", "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _config(root: Path, port: int, user: str, docker_host: str | None) -> str:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {root}/host_ed25519",
        f"AuthorizedKeysFile {root}/authorized_keys",
        f"PidFile {root}/sshd.pid",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "PrintMotd no",
        "PrintLastLog no",
        # What a node needs, for the controller's user only (as a node's sshd_config would
        # say it). Not "AllowTcpForwarding no": sshd 9.2 then refuses streamlocal forwards
        # too; nor "PermitOpen none": it refuses -L to a socket. TCP listening is refused.
        f"Match User {user}",
        "    AllowStreamLocalForwarding yes",
        "    StreamLocalBindUnlink yes",
        "    StreamLocalBindMask 0111",
        "    PermitListen none",
        "    PermitTTY no",
        "    X11Forwarding no",
        "    AllowAgentForwarding no",
    ]
    if docker_host is not None:
        lines.append(f"    SetEnv DOCKER_HOST={docker_host}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def running_sshd(
    root: Path, docker_host: str | None = "unix:///run/o16n-test/docker.sock"
) -> Iterator[Sshd]:
    """Start an sshd whose files are under ``root`` (which must exist and be short: the
    tests' socket paths go there too); ``docker_host`` is set in its sessions' environment."""
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} is missing: apt-get install -y openssh-server")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    host_public_key = _keygen(root / "host_ed25519")
    client_key = root / "client" / "id_ed25519"
    (root / "authorized_keys").write_text(ensure_client_key(client_key) + "\n")
    for _attempt in range(5):
        port = _free_port()
        (root / "sshd_config").write_text(_config(root, port, getpass.getuser(), docker_host))
        known_hosts = root / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
        with (root / "sshd.log").open("wb") as log:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        server = Sshd(
            root, port, getpass.getuser(), client_key, known_hosts, host_public_key, process
        )
        try:
            if _listening(process, port):
                break
        except BaseException:
            server.stop()
            raise
        server.stop()  # the port was taken meanwhile: try another
    else:
        raise RuntimeError(f"sshd did not start: {server.log[-2000:]}")
    try:
        yield server
    finally:
        server.stop()


def _listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False
