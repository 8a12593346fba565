"""Sandboxes: a container plus the link to its agent. Where containers are launched and ended.

Sessions and services ask for a sandbox of a kind, use its agent, and destroy it; they
never see the backend. At controller start, ``owned()`` lists what an earlier run left,
the session manager adopts what it can, and ``reap`` removes the rest.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from controller.errors import AgentGone, O16nError, RuntimeFailure
from controller.runtime.agent_link import AgentLink, AgentTimeout, Reply
from controller.runtime.backend import ComputeBackend, ContainerHandle, ExitReport
from controller.runtime.spec import ENGINE_PATHS, LABEL_PREFIX, ContainerSpec, Kind
from controller.settings import Settings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Sandbox:
    handle: ContainerHandle
    link: AgentLink

    @property
    def key(self) -> str:
        return self.handle.key

    async def call(self, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Reply:
        return await self.link.call(op, args, **kw)


class Sandboxes:
    def __init__(self, backend: ComputeBackend, settings: Settings, image: str) -> None:
        self.backend = backend
        self._settings = settings
        self.image = image

    async def launch(
        self, kind: Kind, *, owner: str = "", ident: str = "", image: str | None = None
    ) -> Sandbox:
        """Create and start a hardened container and wait until its agent has dialled in."""
        spec = ContainerSpec.from_settings(
            self._settings,
            image=image or self.image,
            key=secrets.token_hex(6),
            kind=kind,
            owner=owner,
            ident=ident,
        )
        handle = await self.backend.create(spec)
        try:
            await self.backend.start(handle)
            link = await self._await_agent(handle, self._settings.agent_connect_timeout)
        except BaseException:
            await self.backend.remove(handle)
            raise
        log.debug("sandbox launched", extra={"key": handle.key, "kind": kind})
        return Sandbox(handle, link)

    async def adopt(self, handle: ContainerHandle, timeout: float) -> Sandbox:
        """Re-link with the agent of a container left by an earlier controller."""
        await self.backend.adopt(handle)
        link = await self._await_agent(handle, timeout)
        return Sandbox(handle, link)

    async def reconnect(self, handle: ContainerHandle, timeout: float) -> Sandbox:
        """Wait longer for the agent of a container ``adopt`` listens for already."""
        return Sandbox(handle, await self._await_agent(handle, timeout))

    async def destroy(self, sandbox: Sandbox | ContainerHandle) -> None:
        handle = sandbox.handle if isinstance(sandbox, Sandbox) else sandbox
        try:
            if isinstance(sandbox, Sandbox):
                await sandbox.link.aclose()
        finally:
            await self.backend.remove(handle)

    async def exit_report(self, sandbox: Sandbox, wait: float = 0.0) -> ExitReport | None:
        """How the container ended, waiting up to ``wait`` seconds for it to end;
        ``None`` if it still runs."""
        deadline = time.monotonic() + wait
        while True:
            report = await self.backend.poll(sandbox.handle)
            if report is not None or time.monotonic() >= deadline:
                return report
            await asyncio.sleep(0.1)

    async def end_reason(self, sandbox: Sandbox, exc: O16nError, wait: float) -> str:
        """Why ``sandbox``'s agent failed with ``exc``: how its container ended where Docker
        says so, else the failure itself. The link breaks a moment before Docker reports the
        exit, so for a broken link this waits up to ``wait`` seconds for the report."""
        try:
            report = await self.exit_report(sandbox, wait if isinstance(exc, AgentGone) else 0.0)
        except O16nError:
            report = None
        if report is not None:
            return report.describe()
        if isinstance(exc, AgentTimeout):
            return "its agent stopped answering"
        return exc.message

    async def interrupt(self, sandbox: Sandbox) -> None:
        """SIGINT to the agent: ``KeyboardInterrupt`` inside running user code."""
        await self.backend.signal(sandbox.handle, "SIGINT")

    async def pristine(self, sandbox: Sandbox) -> bool:
        """Whether the container's root filesystem is still exactly its image."""
        changed = await self.backend.changed_paths(sandbox.handle)
        return set(changed) <= ENGINE_PATHS

    async def image_id(self, ref: str) -> str:
        return await self.backend.image_id(ref)

    async def tag_image(self, source: str, target: str) -> None:
        await self.backend.tag_image(source, target)

    async def remove_image(self, ref: str) -> bool:
        return await self.backend.remove_image(ref)

    def image_name(self, repository: str, key: str) -> str:
        """This instance's name for an image it makes (a snapshot's, a service's): the
        start-up reap knows its own images by it."""
        return f"{repository}:{self._settings.instance}-{key}"

    async def commit(self, sandbox: Sandbox, image: str, labels: dict[str, str]) -> str:
        """Save ``sandbox``'s filesystem as ``image``, labelled as this instance's."""
        labels = {LABEL_PREFIX + "instance": self._settings.instance, **labels}
        return await self.backend.commit(sandbox.handle, image, labels)

    async def reap_images(self, repositories: list[str], keep: set[str]) -> int:
        """Remove this instance's images in ``repositories`` that nothing uses any more
        (left by a crash between taking and recording a snapshot, say)."""
        removed = 0
        for repository in repositories:
            for name in await self.backend.image_names(repository):
                mine = name.startswith(self.image_name(repository, ""))
                if mine and name not in keep:
                    log.info("removing unused image", extra={"image": name})
                    removed += await self.backend.remove_image(name)
        return removed

    async def owned(self) -> list[ContainerHandle]:
        return await self.backend.list_owned()

    async def reap(self, handles: list[ContainerHandle]) -> None:
        for handle in handles:
            log.info(
                "removing container left by an earlier run",
                extra={
                    "key": handle.key,
                    "kind": handle.kind,
                    "container": handle.container_id[:12],
                },
            )
            await self.backend.remove(handle)

    async def _await_agent(self, handle: ContainerHandle, timeout: float) -> AgentLink:
        """Wait for the agent, checking now and then that its container still runs."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await self.backend.connect(handle, min(max(remaining, 0.01), 1.0))
            except AgentGone:
                report = await self.backend.poll(handle)
                if report is not None:
                    raise RuntimeFailure(
                        f"the container stopped before its agent connected: {report.describe()}"
                    ) from None
                if time.monotonic() >= deadline:
                    raise
