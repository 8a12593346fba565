"""The Docker container runtime: containers on one Docker engine, agents dialling Unix
sockets in per-container host directories mounted read-only into them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shutil
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, Protocol

from docker.types import LogConfig, Mount, Ulimit

from controller.errors import NotFoundError, O16nError, RuntimeFailure
from controller.runtime.containers import ContainerHandle, ExitReport
from controller.runtime.docker.gateway import ContainerInfo, DockerGateway
from controller.runtime.spec import (
    AGENT_COMMAND,
    AGENT_MOUNT,
    LABEL_PREFIX,
    SOCKET_MOUNT,
    WORKDIR,
    ContainerSpec,
)
from controller.settings import Settings

log = logging.getLogger(__name__)

EVENTS_RETRY_FIRST = 0.5  # seconds before reconnecting to the engine's events, doubling
EVENTS_RETRY_MAX = 30.0
SOCKET_NAME = "agent.sock"
#: Docker's default seccomp profile minus ptrace, process_vm_* and kin (scripts/derive_seccomp.py)
SECCOMP_PROFILE = Path(__file__).with_name("seccomp.json")


@functools.cache
def seccomp_profile() -> str:
    """The seccomp profile of every container, as the JSON text Docker's API takes in
    ``security_opt`` ("seccomp=<json>"). A profile that does not deny by default is refused,
    so a broken file never quietly leaves containers with fewer guards than Docker's own."""
    try:
        profile = json.loads(SECCOMP_PROFILE.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"the seccomp profile {SECCOMP_PROFILE} cannot be read: {exc}"
        ) from None
    if not isinstance(profile, dict) or profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        raise RuntimeFailure(f"the seccomp profile {SECCOMP_PROFILE} does not deny by default")
    return json.dumps(profile, separators=(",", ":"))


class NodeFiles(Protocol):
    """Where a node's containers find their agent and their socket directory, on the node's
    own filesystem: the controller's (``LocalFiles``), or a remote host's (``ssh``)."""

    def agent_dir(self, spec: ContainerSpec) -> str:
        """The agent bundle's directory on the node, mounted read-only at ``AGENT_MOUNT``."""

    def socket_dir(self, key: str) -> str:
        """The container's socket directory on the node, mounted read-only at
        ``SOCKET_MOUNT``."""

    async def prepare(self, key: str) -> None:
        """Make the socket directory (the bind mount's source must exist), and whatever
        carries a connection there to the controller's listener."""

    async def release(self, key: str) -> None:
        """Undo ``prepare``; idempotent."""

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Remove the socket directories of containers not ``in_use``; returns how many."""


class LocalFiles:
    """A node on this machine: each container gets a directory under ``O16N_DATA_DIR``'s
    sockets, where the controller listens itself."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def agent_dir(self, spec: ContainerSpec) -> str:
        return str(spec.agent_dir)

    def socket_dir(self, key: str) -> str:
        return str(self._settings.sockets_dir / key)

    async def prepare(self, key: str) -> None:
        if not is_key(key):
            raise RuntimeFailure(f"not a container key: {key[:100]!r}")
        folder = self._settings.sockets_dir / key
        # the bind mount's source must exist; the container's uid must reach the socket
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(folder, 0o755)  # noqa: PTH101, S103

    async def release(self, key: str) -> None:
        if not is_key(key):
            return  # not a key of ours (a container labelled by hand): never the whole folder
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self._settings.sockets_dir / key)

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Listed first, then judged on the loop: a directory listed was made before the
        listing, so a launch that made it is in use by then (asked at judging time, not
        before a thread that may wait its turn)."""
        folder = self._settings.sockets_dir

        def listing() -> list[str]:
            with contextlib.suppress(FileNotFoundError):
                return [e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
            return []

        names = await asyncio.to_thread(listing)
        stale = [n for n in names if not in_use(n)]

        def remove() -> None:
            for name in stale:
                shutil.rmtree(folder / name, ignore_errors=True)

        if stale:
            await asyncio.to_thread(remove)
            log.info("removed socket directories left behind", extra={"count": len(stale)})
        return len(stale)


_KEY = re.compile(r"^[0-9a-f]{12,32}$")  # ContainerSpec.key's own pattern


def is_key(key: str) -> bool:
    """Whether ``key`` can be a container key of ours: never a path, a ``..`` or anything
    that would mean something on a command line (keys come back from engines' labels)."""
    return bool(_KEY.match(key))


class DockerContainers:
    """Containers on the engine behind ``gateway`` (one compute node). Each gets a
    directory on the node (``files``) mounted read-only at ``SOCKET_MOUNT``; its agent dials
    ``agent.sock`` there, which reaches the controller's listener at ``handle.endpoint``
    (the same directory for a node on this machine; forwarded over SSH for a remote one)."""

    def __init__(
        self,
        gateway: DockerGateway,
        settings: Settings,
        files: NodeFiles | None = None,
        node: str = "",
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._files: NodeFiles = files or LocalFiles(settings)
        self.node = node  # "" for the default node: its handles carry no ``node`` state
        seccomp_profile()  # read at start: a missing or broken profile stops the controller

    def socket_dir(self, key: str) -> Path:
        """The controller's own directory for the container's agent socket (its listener)."""
        return self._settings.sockets_dir / key

    def _handle(self, container_id: str, labels: dict[str, str], image: str) -> ContainerHandle:
        key = labels.get(LABEL_PREFIX + "key", "")
        state = {"id": container_id, "node": self.node} if self.node else {"id": container_id}
        return ContainerHandle(
            key=key,
            kind=labels.get(LABEL_PREFIX + "kind", ""),
            owner=labels.get(LABEL_PREFIX + "owner", ""),
            ident=labels.get(LABEL_PREFIX + "id", ""),
            endpoint=f"unix:{self.socket_dir(key) / SOCKET_NAME}" if key else "",
            environment=image,
            state=state,
        )

    async def create(self, spec: ContainerSpec) -> ContainerHandle:
        try:
            await self._files.prepare(spec.key)
            container_id = await self._gateway.create_container(
                docker_kwargs(spec, self._files.socket_dir(spec.key), self._files.agent_dir(spec))
            )
        except NotFoundError:
            await self._files.release(spec.key)
            raise RuntimeFailure(
                f"image {spec.image} is missing (the runtime image is built by `make image`)"
            ) from None
        except BaseException:
            await self._files.release(spec.key)
            raise
        return self._handle(container_id, spec.labels, spec.image)

    def places(self) -> list[str]:
        return [""]

    def serving(self, key: str, kind: str) -> None:
        """Nothing to count."""

    async def start(self, handle: ContainerHandle) -> None:
        await self._gateway.start(_id(handle))

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        try:
            info = await self._gateway.inspect(_id(handle))
        except NotFoundError:
            return ExitReport("missing", None, oom_killed=False)
        if info.status in ("running", "created", "restarting", "paused"):
            return None
        return ExitReport(info.status, info.exit_code, info.oom_killed, info.error)

    async def signal(self, handle: ContainerHandle, signal: str) -> None:
        await self._gateway.kill(_id(handle), signal)

    async def remove(self, handle: ContainerHandle) -> None:
        await self._gateway.remove_container(_id(handle))
        await self._files.release(handle.key)

    async def reattach(self, handle: ContainerHandle) -> None:
        """Make again what ``create`` prepared (a remote node's socket forward), for a
        container this process adopts."""
        await self._files.prepare(handle.key)

    async def forget(self, handle: ContainerHandle) -> None:
        """Let go of what ``create`` prepared for a container that is gone with its node."""
        await self._files.release(handle.key)

    async def list_owned(self, instance: str | None = None) -> list[ContainerHandle]:
        return [self._handle(i.id, i.labels, i.image) for i in await self._owned(instance)]

    async def _owned(self, instance: str | None = None) -> list[ContainerInfo]:
        label = f"{LABEL_PREFIX}instance={instance or self._settings.instance}"
        return await self._gateway.list_containers(label)

    async def exits(self) -> AsyncGenerator[tuple[str, bool], None]:
        """Keys of this instance's containers as they stop, from the engine's event stream.
        Runs forever: when the engine goes away (a restart, say) it reconnects, backing
        off, and after each connection first yields the containers that stopped unseen."""
        label = f"{LABEL_PREFIX}instance={self._settings.instance}"
        filters = {"type": ["container"], "event": ["die"], "label": [label]}
        delay = EVENTS_RETRY_FIRST
        lost = False  # whether the engine was unreachable since the last connection
        while True:
            try:
                async with self._gateway.events(filters) as events:
                    # subscribed first, then listed: nothing stops unseen in between
                    for info in await self._gateway.list_containers(label):
                        if info.status in ("exited", "dead"):
                            yield info.labels.get(LABEL_PREFIX + "key", ""), lost
                    delay, lost = EVENTS_RETRY_FIRST, False
                    async for event in events:
                        attributes = (event.get("Actor") or {}).get("Attributes") or {}
                        yield str(attributes.get(LABEL_PREFIX + "key", "")), False
            except Exception as exc:  # the engine's stream broke, or it is down: reconnect
                error = exc.message if isinstance(exc, O16nError) else repr(exc)
                log.warning("engine events lost; reconnecting", extra={"error": error})
                lost = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, EVENTS_RETRY_MAX)

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Remove the socket directories of containers not ``in_use`` (left by a failed
        start or a crash); returns how many."""
        return await self._files.sweep(in_use)

    async def close(self) -> None:
        """Nothing to let go of: the gateway is closed by the engine's owner."""


def _id(handle: ContainerHandle) -> str:
    return handle.state.get("id", "")


def docker_kwargs(spec: ContainerSpec, socket_dir: str, agent_dir: str) -> dict[str, Any]:
    """Arguments for ``docker.containers.create``; ``socket_dir`` (on the node) is mounted for
    the agent's socket, ``agent_dir`` (on the node) for the agent."""
    uid, gid = spec.user.split(":")
    return {
        "image": spec.image,
        "name": spec.name,
        "labels": spec.labels,
        "user": spec.user,
        "entrypoint": list(AGENT_COMMAND),
        "command": ["--socket", f"{SOCKET_MOUNT}/agent.sock", "--workdir", WORKDIR],
        "working_dir": WORKDIR,
        "environment": dict(spec.environment),
        "network_mode": spec.network_mode,
        "read_only": spec.read_only,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges", f"seccomp={seccomp_profile()}"],
        "init": True,
        "pids_limit": spec.pids,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,
        "nano_cpus": int(spec.cpus * 1e9),
        "ulimits": [
            Ulimit(name="nofile", soft=spec.nofile, hard=spec.nofile),
            Ulimit(name="fsize", soft=spec.fsize, hard=spec.fsize),
        ],
        "tmpfs": {
            WORKDIR: f"rw,nosuid,nodev,size={spec.work_size},uid={uid},gid={gid},mode=0700",
            "/tmp": f"rw,nosuid,nodev,size={spec.tmp_size},mode=1777",  # noqa: S108
        },
        "mounts": [
            Mount(target=SOCKET_MOUNT, source=socket_dir, type="bind", read_only=True),
            Mount(target=AGENT_MOUNT, source=agent_dir, type="bind", read_only=True),
        ],
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        "ipc_mode": "private",
        "stop_signal": "SIGTERM",
    }
