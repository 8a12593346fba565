"""A compute node reached over SSH: its engine, its files and its agents' sockets.

One OpenSSH master per node (``ssh.SshNode``) carries everything: the node's engine socket
forwarded to a local one (the gateway talks to that), commands that make and remove the
containers' socket directories and unpack the agent bundle, and one streamlocal forward
per container from ``<node dir>/sockets/<key>/agent.sock`` on the node to the controller's
own listener (``-R``), so containers keep ``network none`` and both ends are
authenticated by SSH. See docs/compute-nodes.md.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from controller.errors import RuntimeFailure
from controller.runtime.docker.containers import SOCKET_NAME, is_key
from controller.runtime.docker.ssh import SshNode
from controller.runtime.nodes import NodeAddress
from controller.runtime.spec import ContainerSpec
from controller.settings import Settings

log = logging.getLogger(__name__)

BUNDLE_MAX = 16 * 1024 * 1024  # bytes of the agent bundle's tarball (it is ~200 KiB)
#: A link silent for ALIVE_INTERVAL x ALIVE_COUNT seconds is down (ssh's ServerAlive): long
#: enough for a loaded machine's sshd to answer, short enough to end a cut one's sessions soon
ALIVE_INTERVAL = 2
ALIVE_COUNT = 3


class RemoteNode:
    """The SSH side of one node: open it, then hand ``files`` to its ``DockerContainers``."""

    def __init__(
        self, address: NodeAddress, settings: Settings, key_file: Path, control_dir: Path
    ) -> None:
        if settings.ssh_known_hosts is None:
            raise RuntimeFailure(
                f"{address.entry}: an SSH compute node needs O16N_SSH_KNOWN_HOSTS "
                "(its pinned host keys)"
            )
        self.address = address
        self.ssh = SshNode(
            address,
            key_file=key_file,
            known_hosts=settings.ssh_known_hosts,
            control_dir=control_dir,
            alive_interval=ALIVE_INTERVAL,
            alive_count=ALIVE_COUNT,
        )
        self.engine_socket = control_dir / f"{address.name}.sock"
        self.base = PurePosixPath(settings.node_dir) / f"{settings.instance}-{address.name}"
        self._settings = settings

    async def open(self) -> str:
        """Start the master and forward the node's engine socket; returns the gateway's
        ``base_url``."""
        await self.ssh.open()
        try:
            remote = await self.ssh.docker_host()
            await self.ssh.forward_local(self.engine_socket, remote)
        except BaseException:
            await self.ssh.close()
            raise
        return f"unix://{self.engine_socket}"

    async def close(self) -> None:
        await self.ssh.close()

    def files(self, bundle: str) -> SshFiles:
        return SshFiles(self.ssh, self.base, self._settings.sockets_dir, bundle)

    async def ensure_bundle(self, local: Path) -> str:
        """The agent bundle ``local`` (named by its digest) on the node, copied there once
        (unpacked beside, then renamed: a copy cut half way is never used)."""
        target = self.base / "agent" / local.name
        probe = await self.ssh.run(
            ["sh", "-c", 'test -d "$1" && echo yes || true', "-", str(target)]
        )
        if probe.strip() == b"yes":
            return str(target)
        archive = await asyncio.to_thread(_tarball, local)
        staging = self.base / "agent" / f".staging-{local.name}"
        await self.ssh.run(["rm", "-rf", "--", str(staging)])
        await self.ssh.run(["mkdir", "-p", "-m", "0755", "--", str(staging)])
        await self.ssh.run(
            ["tar", "-x", "--no-same-owner", "-C", str(staging), "-f", "-"], stdin=archive
        )
        await self.ssh.run(["chmod", "-R", "a+rX,go-w", "--", str(staging)])
        await self.ssh.run(["mv", "-T", "--", str(staging), str(target)])
        log.info("agent bundle copied to a compute node", extra={"node": self.address.entry})
        return str(target)


def _tarball(folder: Path) -> bytes:
    """The bundle as a tar archive (regular files and directories only, as staged)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            archive.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    if buffer.tell() > BUNDLE_MAX:
        raise RuntimeFailure(f"the agent bundle {folder} is larger than {BUNDLE_MAX} bytes")
    return buffer.getvalue()


class SshFiles:
    """``NodeFiles`` of a node over SSH: per-container directories under the node's own
    directory, each with its agent socket forwarded to the controller's listener."""

    def __init__(self, ssh: SshNode, base: PurePosixPath, local: Path, bundle: str) -> None:
        self._ssh = ssh
        self._sockets = base / "sockets"
        self._local = local  # the controller's sockets directory (its listeners)
        self._bundle = bundle
        self._forwarded: set[str] = set()

    def agent_dir(self, spec: ContainerSpec) -> str:
        return self._bundle

    def socket_dir(self, key: str) -> str:
        return str(self._sockets / key)

    def _pair(self, key: str) -> tuple[str, Path]:
        return str(self._sockets / key / SOCKET_NAME), self._local / key / SOCKET_NAME

    async def prepare(self, key: str) -> None:
        if not is_key(key):
            raise RuntimeFailure(f"not a container key: {key!r}")
        # one command (each costs the account's shell start); sockets/ is 0711: other users
        # of the node cannot list the keys to dial a new container's socket before its agent
        folder = str(self._sockets / key)
        await self._ssh.run(
            [
                "sh",
                "-c",
                'mkdir -p -- "$1" && chmod 0711 -- "$2" && chmod 0755 -- "$1"',
                "-",
                folder,
                str(self._sockets),
            ]
        )
        await self._ssh.forward_remote(*self._pair(key))
        self._forwarded.add(key)

    async def release(self, key: str) -> None:
        if not is_key(key):
            return
        self._forwarded.discard(key)
        if not self._ssh.alive:
            return  # gone with the connection; the directory goes when the node is back
        await self._ssh.cancel_remote(*self._pair(key))
        await self._ssh.run(["rm", "-rf", "--one-file-system", "--", str(self._sockets / key)])

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        if not self._ssh.alive:
            return 0
        listing = await self._ssh.run(
            ["sh", "-c", 'cd "$1" 2>/dev/null && ls -1A || true', "-", str(self._sockets)],
            limit=4 << 20,
        )
        names = [n for n in listing.decode("utf-8", "replace").splitlines() if is_key(n)]
        stale = [n for n in names if not in_use(n)]
        for name in stale:
            await self.release(name)
        if stale:
            log.info("removed socket directories left on a node", extra={"count": len(stale)})
        return len(stale)
