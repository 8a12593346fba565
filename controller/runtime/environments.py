"""The environment store seam: what a snapshot or a service runs on.

An environment is the root filesystem a container starts from: the runtime's own, one a
session's container was captured as (a snapshot), or a service's own reference on one of
those (so that deleting the snapshot never breaks the service). The database keeps the
opaque references this store hands out, never an engine's names; only ``resolve`` turns one
into what the engine's :class:`~controller.runtime.containers.ContainerRuntime` launches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controller.runtime.containers import ContainerHandle


@dataclass(frozen=True, slots=True)
class Captured:
    """A captured environment, and whether its container had changed nothing of the
    environment it started from (then the captured one has that environment's content,
    under a reference of its own: ``ref`` is always new)."""

    ref: str
    pristine: bool


class EnvironmentStore(Protocol):
    @property
    def base(self) -> str:
        """The reference of the runtime environment of this installation."""

    async def capture(self, handle: ContainerHandle, kind: str, labels: dict[str, str]) -> Captured:
        """Keep ``handle``'s container's filesystem as a new environment: always a new
        reference of its own, pristine or not (Docker commits a new image, the fake store
        writes a new record), never the one the container started from, so the caller
        releases it like any other. ``pristine`` only adds that its content is that
        environment's, unchanged (Docker: ``docker diff`` against the container's own
        image; the fake store: always)."""

    async def keep(self, ref: str, kind: str) -> str:
        """A new reference of its own on environment ``ref`` (a service's), which outlives
        the release of ``ref``."""

    async def release(self, ref: str) -> bool:
        """Let go of ``ref``; absent counts as released. One a container still runs on is
        kept, and ``False`` returned (try again later)."""

    async def resolve(self, ref: str) -> str:
        """What the runtime launches for ``ref`` (404 when there is none)."""

    async def origin(self, ref: str) -> str:
        """The content id of the environment ``ref`` was kept from (``keep``), or of
        ``ref`` itself: tells a service still on the unchanged runtime environment."""

    async def sweep(self, keep: set[str], min_age: float = 0.0) -> int:
        """Release this instance's environments no reference in ``keep`` names, made more
        than ``min_age`` seconds ago; returns how many."""
