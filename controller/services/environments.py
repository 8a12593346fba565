"""A service's own environment and workspace: made at publish (from a snapshot, or the base
environment), let go of at delete, and whether it is the base environment unchanged.

Publishing copies what a service needs — its own environment (kept by the engine's store)
and its own hard link of the snapshot's tarball — so deleting the snapshot afterwards
(Microsoft's SDK does it at once) never breaks the service."""

from __future__ import annotations

import asyncio
import logging

from controller.auth.roles import Identity
from controller.errors import NotFoundError, O16nError
from controller.runtime.environments import EnvironmentStore
from controller.services.pool import Spawn
from controller.settings import Settings
from controller.snapshots import archives
from controller.snapshots.manager import SWEEP_AGE, SnapshotManager
from controller.store.services import ServiceRecord

log = logging.getLogger(__name__)

#: seconds between the tries to release a deleted service's environment a container held
IMAGE_DROP_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


class ServiceEnvironments:
    def __init__(
        self,
        settings: Settings,
        snapshots: SnapshotManager,
        store: EnvironmentStore,
        spawn: Spawn,
    ) -> None:
        self._settings = settings
        self._snapshots = snapshots
        self._store = store
        self._spawn = spawn
        self._base_origin: str | None = None
        self._on_base: dict[str, bool] = {}

    async def make(
        self, caller: Identity, snapshot_id: str | None, key: str
    ) -> tuple[str, str | None, bool]:
        """The service's own environment and tarball copy (from a snapshot, or a fresh
        runtime), and whether that environment is the base one unchanged."""
        store = self._store
        if snapshot_id is None:
            return await store.keep(store.base, "service"), None, True
        snapshot = await self._snapshots.get(caller, snapshot_id)
        relative = f"services/{key}.tar.gz"
        await asyncio.to_thread(
            archives.copy,
            self._snapshots.archive_path(snapshot),
            self._settings.shared_dir / relative,
        )
        # A snapshot whose container changed nothing of its environment runs on the base one.
        source = store.base if snapshot.pristine else snapshot.image
        return await store.keep(source, "service"), relative, snapshot.pristine

    async def drop(self, environment: str, archive: str | None) -> None:
        if archive:
            await asyncio.to_thread(archives.remove, self._settings.shared_dir / archive)
        if not await self._store.release(environment):  # a container still runs on it
            self._spawn(f"image-drop:{environment}", self._drop_later(environment))

    async def _drop_later(self, environment: str) -> None:
        """Release the environment of a deleted service once the container that held it has
        gone (a pool start still in flight when the service was deleted): tried for about a
        minute; after that, or while the engine is away, the periodic sweep takes it."""
        for delay in IMAGE_DROP_RETRIES:
            await asyncio.sleep(delay)
            try:
                if await self._store.release(environment):
                    return
            except O16nError:
                return

    async def runs_on_base(self, record: ServiceRecord) -> bool:
        """Whether the service's environment was kept from the base environment unchanged,
        asked of the store once per environment (a service's reference is unique to its
        environment, so the answer stays)."""
        if not record.generic:
            return False
        known = self._on_base.get(record.image)
        if known is None:
            if self._base_origin is None:
                self._base_origin = await self._store.origin(self._store.base)
            try:
                known = await self._store.origin(record.image) == self._base_origin
            except NotFoundError:
                known = False
            self._on_base[record.image] = known
        return known

    async def sweep_files(self, recorded: set[str]) -> int:
        """Remove service tarballs no service names (a publish killed half-way left its
        hard link); returns how many. In a directory other controllers share, only those
        untouched for ``SWEEP_AGE`` seconds: one of them may be publishing right now."""
        age = SWEEP_AGE if self._settings.shared_with_others else 0.0
        removed = await asyncio.to_thread(
            archives.sweep, self._settings.shared_dir / "services", recorded, age
        )
        if removed:
            log.info("removed service files left behind", extra={"count": removed})
        return removed
