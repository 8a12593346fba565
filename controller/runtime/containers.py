"""The container runtime seam: where sandboxes run, in a few Popen-shaped methods.

An engine (``controller.runtime.engines``) implements :class:`ContainerRuntime` for its
containers and :class:`~controller.runtime.environments.EnvironmentStore` for what they run
on. Nothing above ``controller.runtime`` sees an engine's own ids: a
:class:`ContainerHandle` carries them as opaque ``state``, and the agent's address as an
opaque ``endpoint`` that only ``agent_link`` reads. Compare jupyter_client's kernel
provisioners: launch returns connection info, state is saved to reconnect, interrupt goes
to the agent as a message (the engine's signal is only the fallback).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.runtime.spec import ContainerSpec


@dataclass(frozen=True, slots=True)
class ContainerHandle:
    """A container this controller owns.

    ``key`` is ours (unique per container, in its labels and names); ``endpoint`` is where
    its agent dials in (``agent_link.listener`` understands it; e.g. ``unix:/path``);
    ``state`` is the engine's own (a Docker container id, a pid), kept so a restarted
    controller can find the container again; callers never read it but for its ``id``
    (``engine_id``), which they only show.
    """

    key: str
    kind: str
    owner: str
    ident: str
    endpoint: str
    environment: str = ""
    state: Mapping[str, str] = field(default_factory=dict)

    @property
    def place(self) -> str:
        """Where the container runs, for an engine with several places (a compute node's
        name; "" for the default one)."""
        return self.state.get("node", "")

    @property
    def engine_id(self) -> str:
        """The engine's own name of the container (``state["id"]``, "" if it has none):
        shown to operators and kept in the sessions table, never interpreted."""
        return self.state.get("id", "")


@dataclass(frozen=True, slots=True)
class ExitReport:
    """How a container ended (or that it is gone)."""

    status: str
    exit_code: int | None
    oom_killed: bool
    error: str = ""

    @property
    def cause(self) -> str:
        """``describe`` in one word: the reason of ``o16n_container_deaths_total``."""
        if self.oom_killed:
            return "oom"
        if self.status == "lost":
            return "lost"
        if self.status == "missing":
            return "missing"
        if self.exit_code is not None and self.exit_code >= 128:
            return "killed"
        return "exited"

    def describe(self) -> str:
        if self.oom_killed:
            return "the container ran out of memory and was killed"
        if self.status == "lost":  # its engine is unreachable: the container is given up
            return f"compute node lost ({self.error})" if self.error else "compute node lost"
        if self.status == "missing":
            return "the container no longer exists"
        if self.exit_code is not None and self.exit_code >= 128:
            return f"the container was killed by signal {self.exit_code - 128}"
        detail = f": {self.error}" if self.error else ""
        if self.exit_code is None:  # an engine that could not tell (the fake one's orphans)
            return f"the container exited with an unknown exit code{detail}"
        return f"the container exited with code {self.exit_code}{detail}"


class ContainerRuntime(Protocol):
    """Create, start, poll, signal, remove and list the containers of this instance."""

    def places(self) -> list[str]:
        """Where a new container may go now, the best first, as ``handle.place`` names
        them (``[""]`` for an engine with one place): warm pools keep containers in each."""

    async def create(self, spec: ContainerSpec) -> ContainerHandle:
        """Create a container (not started) at ``spec.place`` if it is among ``places()``,
        else at the best place. Its agent will dial ``handle.endpoint``, so the caller
        listens there before ``start``."""

    def serving(self, key: str, kind: str) -> None:
        """A warm container now serves ``kind`` (a session, a service): for an engine that
        reports its containers by kind."""

    async def start(self, handle: ContainerHandle) -> None: ...

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        """``None`` while the container runs, else how it ended."""

    async def signal(self, handle: ContainerHandle, signal: str) -> None:
        """Send ``signal`` to the container's agent: only the fallback of an interrupt the
        agent did not answer (interrupts are agent messages)."""

    async def remove(self, handle: ContainerHandle) -> None:
        """Kill and remove, and whatever the engine kept for it on this host; idempotent
        ("not found" is success)."""

    async def list_owned(self, instance: str | None = None) -> list[ContainerHandle]:
        """Every container of this controller instance, running or not; with ``instance``,
        that other controller's (of the group, whose sessions this one takes over)."""

    def exits(self) -> AsyncGenerator[tuple[str, bool], None]:
        """Keys of this instance's containers as they stop, forever (reconnecting to the
        engine as needed; what stopped while it was away is reported when it is back, with
        ``True``: seen only after the engine was unreachable)."""

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Remove what containers not ``in_use`` (asked as late as possible) left on this
        host (socket directories, say); returns how many."""

    async def close(self) -> None:
        """Let go of the engine (containers keep running)."""
