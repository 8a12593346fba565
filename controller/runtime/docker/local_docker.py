"""The first compute backend: containers on the local Docker engine."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from docker.types import LogConfig, Mount, Ulimit

from controller.errors import NotFoundError, O16nError, RuntimeFailure
from controller.runtime.agent_link import AgentLink, AgentListener
from controller.runtime.backend import ContainerHandle, ExitReport
from controller.runtime.docker.gateway import DockerGateway
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


class LocalDockerBackend:
    """Containers on the engine behind ``gateway``; agents dial Unix sockets on this host."""

    def __init__(self, gateway: DockerGateway, settings: Settings) -> None:
        self._gateway = gateway
        self._settings = settings
        self._listeners: dict[str, AgentListener] = {}
        seccomp_profile()  # read at start: a missing or broken profile stops the controller

    async def create(self, spec: ContainerSpec) -> ContainerHandle:
        listener = self._listener(spec.key)
        try:
            await listener.start()
            container_id = await self._gateway.create_container(docker_kwargs(spec))
        except NotFoundError:
            await self._drop_listener(spec.key)
            raise RuntimeFailure(
                f"image {spec.image} is missing (the runtime image is built by `make image`)"
            ) from None
        except BaseException:
            await self._drop_listener(spec.key)
            raise
        return ContainerHandle(
            container_id, spec.key, spec.kind, spec.owner, spec.ident, spec.image
        )

    async def start(self, handle: ContainerHandle) -> None:
        await self._gateway.start(handle.container_id)

    async def connect(self, handle: ContainerHandle, timeout: float) -> AgentLink:
        listener = self._listeners.get(handle.key)
        if listener is None:
            raise NotFoundError(f"no listener for container {handle.key}")
        return await listener.wait_link(timeout)

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        try:
            info = await self._gateway.inspect(handle.container_id)
        except NotFoundError:
            return ExitReport("missing", None, oom_killed=False)
        if info.status in ("running", "created", "restarting", "paused"):
            return None
        return ExitReport(info.status, info.exit_code, info.oom_killed, info.error)

    async def signal(self, handle: ContainerHandle, signal: str) -> None:
        await self._gateway.kill(handle.container_id, signal)

    async def remove(self, handle: ContainerHandle) -> None:
        await self._drop_listener(handle.key)
        await self._gateway.remove_container(handle.container_id)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(shutil.rmtree, self._settings.sockets_dir / handle.key)

    async def commit(self, handle: ContainerHandle, image_ref: str, labels: dict[str, str]) -> str:
        repository, _, tag = image_ref.rpartition(":")
        return await self._gateway.commit(handle.container_id, repository, tag, labels)

    async def changed_paths(self, handle: ContainerHandle) -> list[str]:
        return await self._gateway.changed_paths(handle.container_id)

    async def image_id(self, ref: str) -> str:
        return await self._gateway.image_id(ref)

    async def derive_image(self, source: str, target: str, labels: dict[str, str]) -> None:
        repository, _, tag = target.rpartition(":")
        await self._gateway.derive_image(source, repository, tag, labels)

    async def image_labels(self, ref: str) -> dict[str, str]:
        return await self._gateway.image_labels(ref)

    async def remove_image(self, ref: str) -> bool:
        return await self._gateway.remove_image(ref)

    async def image_names(
        self, labels: dict[str, str], made_before: float | None = None
    ) -> list[str]:
        return await self._gateway.image_tags(labels, made_before)

    async def list_owned(self) -> list[ContainerHandle]:
        infos = await self._gateway.list_containers(
            f"{LABEL_PREFIX}instance={self._settings.instance}"
        )
        handles = []
        for info in infos:
            labels = info.labels
            handles.append(
                ContainerHandle(
                    info.id,
                    labels.get(LABEL_PREFIX + "key", ""),
                    labels.get(LABEL_PREFIX + "kind", ""),
                    labels.get(LABEL_PREFIX + "owner", ""),
                    labels.get(LABEL_PREFIX + "id", ""),
                    info.image,
                )
            )
        return handles

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
        start or a crash); returns how many. Listed first, then judged on the loop: a
        directory listed was made before the listing, so a launch that made it is in use
        by then (asked at judging time, not before a thread that may wait its turn)."""
        folder = self._settings.sockets_dir

        def listing() -> list[str]:
            with contextlib.suppress(FileNotFoundError):
                return [e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)]
            return []

        names = await asyncio.to_thread(listing)
        stale = [n for n in names if not in_use(n) and n not in self._listeners]

        def remove() -> None:
            for name in stale:
                shutil.rmtree(folder / name, ignore_errors=True)

        if stale:
            await asyncio.to_thread(remove)
            log.info("removed socket directories left behind", extra={"count": len(stale)})
        return len(stale)

    async def adopt(self, handle: ContainerHandle) -> None:
        await self._listener(handle.key).start()

    async def close(self) -> None:
        for key in list(self._listeners):
            await self._drop_listener(key)

    def _listener(self, key: str) -> AgentListener:
        listener = self._listeners.get(key)
        if listener is None:
            listener = AgentListener(
                self._settings.sockets_dir / key,
                int(self._settings.agent_reply_max_bytes),
                int(self._settings.agent_blob_max_bytes),
            )
            self._listeners[key] = listener
        return listener

    async def _drop_listener(self, key: str) -> None:
        listener = self._listeners.pop(key, None)
        if listener is not None:
            await listener.close()


def docker_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """Arguments for ``docker.containers.create``."""
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
            Mount(target=SOCKET_MOUNT, source=str(spec.socket_dir), type="bind", read_only=True),
            Mount(target=AGENT_MOUNT, source=str(spec.agent_dir), type="bind", read_only=True),
        ],
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        "ipc_mode": "private",
        "stop_signal": "SIGTERM",
    }
