"""The Docker environment store: environments are images, and a reference is an image name.

A snapshot is a ``docker commit`` of its session's container, a service's own environment an
image derived from one (``FROM``, ``LABEL``: no layer copied). The names are this module's
alone (``o16n-snapshot:<instance>-<key>``, ``o16n-service:<instance>-<key>``); the database
keeps them as opaque references, so rows written before the store existed (they hold the
same image names) need no migration. Which images are this instance's is told by their
labels, never by a name.
"""

from __future__ import annotations

import logging
import secrets
import time

from controller.runtime.containers import ContainerHandle
from controller.runtime.docker.gateway import DockerGateway, dockerfile_safe
from controller.runtime.environments import Captured
from controller.runtime.spec import AGENT_MOUNT, LABEL_PREFIX, SOCKET_MOUNT, WORKDIR
from controller.settings import Settings

log = logging.getLogger(__name__)

#: The repository of each kind of environment this store makes.
REPOSITORIES = {"snapshot": "o16n-snapshot", "service": "o16n-service"}

#: What the engine itself adds to every container's root (``init``'s binary, mount points,
#: name resolution files): a container whose ``docker diff`` lists only these changed
#: nothing of its image.
ENGINE_PATHS = frozenset(
    {
        "/usr", "/usr/sbin", "/usr/sbin/docker-init", "/etc", "/etc/hosts", "/etc/hostname",
        "/etc/resolv.conf", "/dev", "/proc", "/sys", "/run", SOCKET_MOUNT, WORKDIR,
        "/opt", AGENT_MOUNT,  # the agent's mount point (missing in images made before it)
        "/tmp",  # noqa: S108 (a mount point, not a file we use)
    }
)  # fmt: skip


class DockerEnvironments:
    def __init__(self, gateway: DockerGateway, settings: Settings, base: str) -> None:
        self._gateway = gateway
        self._instance = settings.instance
        self._base = base

    @property
    def base(self) -> str:
        """The runtime image (``O16N_RUNTIME_IMAGE``, else the tag of ``runtime_image/``)."""
        return self._base

    def _name(self, kind: str, key: str) -> str:
        """This instance's name for an image it makes. Only a name: which images are this
        instance's is told by their labels, never by it."""
        return f"{REPOSITORIES[kind]}:{self._instance}-{key}"

    def _labels(self, kind: str, labels: dict[str, str] | None = None) -> dict[str, str]:
        return {
            **(labels or {}),
            LABEL_PREFIX + "instance": self._instance,
            LABEL_PREFIX + "kind": kind,
        }

    async def capture(self, handle: ContainerHandle, kind: str, labels: dict[str, str]) -> Captured:
        """``docker commit``, after ``docker diff`` told whether the container changed
        anything of its image; a container that changed nothing gets its own image's layers
        under a new name instead (no layer of its own, so another compute node that has
        those layers makes the same image without a byte moved)."""
        pristine = await self.pristine(handle)
        name = self._name(kind, secrets.token_hex(16))
        repository, _, tag = name.rpartition(":")
        labelled = self._labels(kind, labels)
        source = handle.environment  # an image name (an adopted container's may be an id)
        if (
            pristine
            and not source.startswith("sha256:")
            and dockerfile_safe(source, *labelled, *labelled.values())
        ):
            await self._gateway.derive_image(source, repository, tag, labelled)
        else:
            await self._gateway.commit(handle.engine_id, repository, tag, labelled)
        return Captured(name, pristine)

    async def pristine(self, handle: ContainerHandle) -> bool:
        """Whether the container's root filesystem is still exactly its image."""
        changed = await self._gateway.changed_paths(handle.engine_id)
        return set(changed) <= ENGINE_PATHS

    async def keep(self, ref: str, kind: str) -> str:
        """A new image: ``ref`` labelled with the exact instance, ``kind`` and the id of
        ``ref`` (which tells a service still on the runtime image)."""
        name = self._name(kind, secrets.token_hex(8))
        repository, _, tag = name.rpartition(":")
        labels = self._labels(kind, {LABEL_PREFIX + "base": await self._gateway.image_id(ref)})
        await self._gateway.derive_image(ref, repository, tag, labels)
        return name

    async def release(self, ref: str) -> bool:
        return await self._gateway.remove_image(ref)

    async def resolve(self, ref: str) -> str:
        """The image name itself, unchecked: a missing image fails the container's creation."""
        return ref

    async def origin(self, ref: str) -> str:
        """The id of the image ``ref`` was derived from; for an image made before images were
        derived (a plain second name), its own id."""
        labels = await self._gateway.image_labels(ref)
        return labels.get(LABEL_PREFIX + "base") or await self._gateway.image_id(ref)

    async def sweep(self, keep: set[str], min_age: float = 0.0) -> int:
        """Remove this instance's snapshot and service images that nothing uses any more
        (left by a crash between making an image and recording it, say), only those older
        than ``min_age`` seconds (the periodic reap: an image being published right now is
        not recorded yet either).

        This instance's images are those labelled with exactly its name: another instance
        on the same engine, even one whose name starts with this one's, is never touched.
        Images from before images were labelled are only ever kept."""
        removed = 0
        names = await self._gateway.image_tags(
            {LABEL_PREFIX + "instance": self._instance},
            time.time() - min_age if min_age else None,
        )
        for name in names:
            ours = any(name.startswith(repository + ":") for repository in REPOSITORIES.values())
            if ours and name not in keep:
                log.info("removing unused image", extra={"image": name})
                removed += await self._gateway.remove_image(name)
        return removed

    async def count(self, kind: str) -> int:
        """How many images of ``kind`` this instance has, by their exact labels."""
        return len(await self._gateway.image_tags(self._labels(kind), None))
