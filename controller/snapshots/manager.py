"""Take, list, download, delete and load snapshots. Snapshots are private to their creator.

Taking one asks the session's agent for a workspace tarball (working-directory files plus a
dill dump of each global it can serialize; the rest are reported, not fatal) and commits
the session's container as an environment (the engine's environment store keeps it; the row
holds its opaque reference), under the session's lock so nothing runs meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import IO

from aiohttp import web

from controller.auth.roles import Identity
from controller.clock import dotnet_timestamp
from controller.errors import BadRequestError, NotFoundError, RuntimeFailure, translate
from controller.runtime.agent_link import AGENT_TIMEOUT, RUNTIME, SinkFailed
from controller.runtime.blobs import open_source
from controller.runtime.containers import ContainerHandle
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.spec import LABEL_PREFIX
from controller.sessions.manager import SessionManager
from controller.settings import Settings
from controller.snapshots import archives
from controller.store.snapshots import SnapshotRecord, SnapshotsRepo

log = logging.getLogger(__name__)

SWEEP_AGE = 900.0  # seconds a file no row names must be untouched before the periodic sweep


class SnapshotManager:
    def __init__(
        self,
        settings: Settings,
        repo: SnapshotsRepo,
        sessions: SessionManager,
        sandboxes: Sandboxes,
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._sessions = sessions
        self._sandboxes = sandboxes

    def archive_path(self, record: SnapshotRecord) -> Path:
        return self._settings.shared_dir / record.archive

    async def create(self, caller: Identity, session_id: str, name: str | None) -> SnapshotRecord:
        snapshot_id = str(uuid.uuid4())
        relative = f"snapshots/{snapshot_id}.tar.gz"
        writer = archives.ArchiveWriter(self._settings.shared_dir / relative)
        try:
            async with self._sessions.using(caller, session_id) as sandbox:
                # the tarball streams to disk; the agent builds it in its memory, so that
                # is its limit
                reply, _ = await sandbox.call(
                    "snapshot_save",
                    timeout=AGENT_TIMEOUT,
                    sink=writer,
                    blob_limit=int(self._settings.container_memory),
                )
                labels = {
                    LABEL_PREFIX + "snapshot": snapshot_id,
                    LABEL_PREFIX + "owner": caller.username,
                }
                captured = await self._sandboxes.environments.capture(
                    sandbox.handle, "snapshot", labels
                )
                pristine = captured.pristine and await self._on_base(sandbox.handle)
        except SinkFailed as exc:  # the data directory's disk, say (a full one is a 507)
            await writer.discard()
            await asyncio.to_thread(archives.remove, writer.path)  # nothing was captured
            known = translate(exc)
            raise known or RuntimeFailure(
                f"the snapshot could not be written: {exc.error}"
            ) from exc
        except BaseException:
            await writer.discard()
            raise
        try:
            digest = await writer.commit()
            skipped = reply.get("skipped")
            now = time.time()
            record = SnapshotRecord(
                id=snapshot_id,
                name=name,
                owner_id=caller.user_id,
                owner_name=caller.username,
                runtime=RUNTIME,
                image=captured.ref,
                archive=relative,
                size=writer.size,
                sha256=digest,
                skipped={str(k): str(v)[:300] for k, v in skipped.items()}
                if isinstance(skipped, dict)
                else {},
                created_at=now,
                creation_time=dotnet_timestamp(now),
                pristine=pristine,
            )
            await self._repo.insert(record)
        except BaseException:
            await writer.discard()
            await self._discard(captured.ref, writer.path)
            raise
        log.info(
            "snapshot taken",
            extra={"snapshot": snapshot_id, "bytes": writer.size, "skipped": list(record.skipped)},
        )
        return record

    async def _on_base(self, handle: ContainerHandle) -> bool:
        """Whether ``handle``'s container started on the base environment: ``pristine`` is
        measured against the environment it started from, and a service published from a
        pristine snapshot runs on the base one, so a session started from a changed
        snapshot must not make its own snapshot pristine."""
        store = self._sandboxes.environments
        started = handle.environment or store.base
        try:
            return await store.origin(started) == await store.origin(store.base)
        except NotFoundError:
            return False

    async def sweep(self, everything: bool = False) -> int:
        """Remove snapshot files no row names: a ``.tmp`` a killed write left, a tarball
        whose row a crash never wrote. Only those untouched for ``SWEEP_AGE`` seconds, as
        a snapshot being taken right now has such files too, unless ``everything`` (at
        start, when nothing is being written) and no other controller shares the
        directory (one of them may be taking a snapshot); returns how many."""
        recorded = {record.archive for record in await self._repo.all()}
        folder = self._settings.shared_dir / "snapshots"
        at_once = everything and not self._settings.shared_with_others
        removed = await asyncio.to_thread(
            archives.sweep, folder, recorded, 0.0 if at_once else SWEEP_AGE
        )
        if removed:
            log.info("removed snapshot files left behind", extra={"count": removed})
        return removed

    async def environments(self) -> set[str]:
        """The environments the stored snapshots use."""
        return {record.image for record in await self._repo.all()}

    async def get(self, caller: Identity, snapshot_id: str) -> SnapshotRecord:
        record = await self._repo.get(snapshot_id) if len(snapshot_id) <= 64 else None
        if record is None or record.owner_id != caller.user_id:
            raise NotFoundError(f"no snapshot '{snapshot_id[:100]}'")
        return record

    async def owned_by(self, caller: Identity) -> list[SnapshotRecord]:
        return await self._repo.owned_by(caller.user_id)

    async def delete(self, caller: Identity, snapshot_id: str) -> None:
        """Delete a snapshot; services published from it keep their own copies."""
        record = await self.get(caller, snapshot_id)
        await self._repo.delete(record.id)
        await self._discard(record.image, self.archive_path(record))

    async def write_zip(self, record: SnapshotRecord, out: IO[bytes]) -> None:
        """The snapshot as a zip (files plus ``.o16n-workspace/<name>.dill``) into ``out``."""
        try:
            await asyncio.to_thread(archives.tar_to_zip, self.archive_path(record), out)
        except FileNotFoundError:
            raise _missing(record) from None

    async def source(self, caller: Identity, snapshot_id: str) -> tuple[str, Path]:
        """A snapshot's environment and the path of its tarball, for a session to start from."""
        record = await self.get(caller, snapshot_id)
        self._check_runtime(record)
        return record.image, self.archive_path(record)

    async def load(self, caller: Identity, session_id: str, snapshot_id: str) -> None:
        """Merge a snapshot into a running session: its objects win, its files overwrite.
        The tarball streams from its file to the agent."""
        record = await self.get(caller, snapshot_id)
        self._check_runtime(record)
        async with contextlib.AsyncExitStack() as stack:
            try:
                blob = await stack.enter_async_context(open_source(self.archive_path(record)))
            except FileNotFoundError:
                raise _missing(record) from None
            await self._sessions.call(caller, session_id, "snapshot_load", blob=blob)

    @staticmethod
    def _check_runtime(record: SnapshotRecord) -> None:
        if record.runtime != RUNTIME:
            raise BadRequestError(f"snapshot '{record.id}' is an {record.runtime} snapshot")

    async def _discard(self, environment: str, archive: Path) -> None:
        await asyncio.to_thread(archives.remove, archive)
        await self._sandboxes.environments.release(environment)


def _missing(record: SnapshotRecord) -> NotFoundError:
    return NotFoundError(f"the content of snapshot '{record.id}' is missing")


#: The app's snapshot manager.
SNAPSHOTS = web.AppKey("snapshots", SnapshotManager)
