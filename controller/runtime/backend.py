"""The narrow, all-async protocol of "where containers run".

Sessions and services talk to a :class:`ComputeBackend` only through ``sandboxes``; the
local Docker engine (``local_docker``) is the first implementation. Another engine, a set
of compute nodes or Kubernetes slots in behind the same methods.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol

from controller.runtime.agent_link import AgentLink
from controller.runtime.spec import ContainerSpec


@dataclass(frozen=True, slots=True)
class ContainerHandle:
    """A container we own: the engine's id plus our key and labels."""

    container_id: str
    key: str
    kind: str
    owner: str
    ident: str
    image: str = ""


@dataclass(frozen=True, slots=True)
class ExitReport:
    """How a container ended (or that it is gone)."""

    status: str
    exit_code: int | None
    oom_killed: bool
    error: str = ""

    def describe(self) -> str:
        if self.oom_killed:
            return "the container ran out of memory and was killed"
        if self.status == "missing":
            return "the container no longer exists"
        if self.exit_code is not None and self.exit_code >= 128:
            return f"the container was killed by signal {self.exit_code - 128}"
        detail = f": {self.error}" if self.error else ""
        return f"the container exited with code {self.exit_code}{detail}"


class ComputeBackend(Protocol):
    async def create(self, spec: ContainerSpec) -> ContainerHandle:
        """Create a container (not started) and start listening for its agent."""

    async def start(self, handle: ContainerHandle) -> None: ...

    async def connect(self, handle: ContainerHandle, timeout: float) -> AgentLink:
        """The link to the container's agent, waiting for it to dial in."""

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        """``None`` while the container runs, else how it ended."""

    async def signal(self, handle: ContainerHandle, signal: str) -> None: ...

    async def remove(self, handle: ContainerHandle) -> None:
        """Kill and remove; idempotent ("not found" is success)."""

    async def commit(self, handle: ContainerHandle, image_ref: str, labels: dict[str, str]) -> str:
        """Save the container's filesystem as image ``image_ref``; returns the image id."""

    async def changed_paths(self, handle: ContainerHandle) -> list[str]:
        """Paths of the container's root filesystem that differ from its image."""

    async def image_id(self, ref: str) -> str:
        """The content id of an image name (404 when there is none)."""

    async def derive_image(self, source: str, target: str, labels: dict[str, str]) -> None:
        """Make image ``target``: ``source`` with ``labels`` added (a service's own image)."""

    async def image_labels(self, ref: str) -> dict[str, str]:
        """The labels of image ``ref`` (404 when there is none)."""

    async def remove_image(self, ref: str) -> bool:
        """Remove an image name; absent counts as removed. One a container still uses is
        kept, and ``False`` returned."""

    async def image_names(
        self, labels: dict[str, str], made_before: float | None = None
    ) -> list[str]:
        """Every ``repository:tag`` name of the images carrying all ``labels`` exactly
        (made before the Unix time ``made_before``, if given)."""

    async def list_owned(self) -> list[ContainerHandle]:
        """Every container of this controller instance, running or not."""

    def exits(self) -> AsyncGenerator[tuple[str, bool], None]:
        """Keys of this instance's containers as they stop, forever (reconnecting to the
        engine as needed; what stopped while it was away is reported when it is back, with
        ``True``: seen only after the engine was unreachable)."""

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Remove what containers not ``in_use`` (asked as late as possible) left on this
        host; returns how many."""

    async def adopt(self, handle: ContainerHandle) -> None:
        """Listen again for the agent of a container an earlier controller started."""

    async def close(self) -> None:
        """Stop listening for every agent (containers keep running)."""
