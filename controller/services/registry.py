"""The published services, in memory and in the store: publish, patch, delete, pools.

Each version gets a warm pool as soon as it is published, and again when the controller
restarts. The pieces are modules of their own: the in-memory catalogue (``catalogue``), the
JSON shape (``shape``), pool sizes (``sizing``), bringing up containers (``launcher``) and
the service's own environment and workspace (``environments``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.auth.roles import Identity
from controller.clock import dotnet_timestamp
from controller.errors import BadRequestError, ConflictError, NotFoundError, O16nError
from controller.http.streams import spool_dir
from controller.metrics.definitions import forget_service
from controller.runtime.agent_link import RUNTIME
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.warm_pool import WarmPool
from controller.services import access, swagger
from controller.services.catalogue import Catalogue
from controller.services.catalogue import Service as Service  # its users import it from here
from controller.services.environments import ServiceEnvironments
from controller.services.launcher import ServiceLauncher
from controller.services.models import PublishWebServiceRequest, check_name, check_version
from controller.services.pool import Spawn
from controller.services.realtime.model import (
    DEFINITIONS_IN,
    DEFINITIONS_OUT,
    REALTIME,
    ModelSchema,
    load_schema,
)
from controller.services.realtime.prepare import ModelPreparer
from controller.services.realtime.upload import RealtimeForm
from controller.services.shape import definitions, inputs
from controller.services.sizing import pool_sizes, requested_sizes
from controller.settings import Settings
from controller.snapshots import archives
from controller.snapshots.manager import SnapshotManager
from controller.store.db import DuplicateKey
from controller.store.services import ServiceRecord, ServicesRepo

log = logging.getLogger(__name__)


class ServiceRegistry:
    def __init__(
        self,
        settings: Settings,
        repo: ServicesRepo,
        snapshots: SnapshotManager,
        sandboxes: Sandboxes,
        spawn: Spawn,
        warm: WarmPool | None = None,
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._services = Catalogue()
        self._environments = ServiceEnvironments(settings, snapshots, sandboxes.environments, spawn)
        self._launcher = ServiceLauncher(settings, sandboxes, self._environments, spawn, warm)
        self._models = ModelPreparer(
            sandboxes,
            warm,
            model_max=int(settings.realtime_model_max),
            timeout=settings.realtime_prepare_timeout,
            spool_dir=spool_dir(settings),
        )
        self._lock = asyncio.Lock()
        #: the batch paths and definitions of a per-service document, when batch is served
        self.batch_document: Callable[[ServiceRecord], dict[str, Any]] | None = None

    # --- lookup ---------------------------------------------------------------------------

    def get(self, name: str, version: str) -> Service:
        return self._services.get(name, version)

    def versions(self, name: str) -> list[Service]:
        """Every version of ``name``, oldest first (the SDK takes the last as the latest)."""
        return self._services.versions(name)

    def all(self) -> list[Service]:
        return self._services.all()

    # The same, as the store has it now: a client may publish through one controller of
    # the group and call through another at once, before ``watch`` (a second) catches up.
    # A hit costs nothing; a miss, or a listing, one indexed read.

    async def find(self, name: str, version: str) -> Service:
        """``get``, the store read when the catalogue misses."""
        try:
            return self.get(name, version)
        except NotFoundError:
            if not await self._repo.exists(name, version):
                raise
        await self.refresh()
        return self.get(name, version)

    async def versions_now(self, name: str) -> list[Service]:
        if await self._repo.count(name) != len(self.versions(name)):
            await self.refresh()
        return self.versions(name)

    async def all_now(self) -> list[Service]:
        if await self._repo.count() != len(self._services):
            await self.refresh()
        return self.all()

    # --- lifecycle ------------------------------------------------------------------------

    async def load(self) -> None:
        """At start: every stored service, its pool warming in the background."""
        for record in await self._repo.all():
            service = self._make(record)
            self._services.put(service)
            service.pool.warm()
        log.info("services loaded", extra={"count": len(self._services)})

    async def publish(
        self,
        caller: Identity,
        name: str,
        version: str | None,
        request: PublishWebServiceRequest,
    ) -> Service:
        check_name(name)
        version = check_version(version) if version is not None else str(uuid.uuid4())
        async with self._lock:
            existing = self.versions(name)
            access.check_publish(caller, name, existing[0].record if existing else None)
            if (name, version) in self._services:
                raise _exists(name, version)
            if not request.code:
                raise BadRequestError("'code' is required to publish a web service")
            key = secrets.token_hex(8)
            image, archive, generic = await self._environments.make(caller, request.snapshotId, key)
            record = _new_record(
                caller,
                name,
                version,
                key,
                runtime=RUNTIME,
                code=request.code,
                image=image,
                description=request.description,
                init_code=request.initCode,
                operation_id=request.operationId,
                inputs=definitions(request.inputParameterDefinitions),
                outputs=definitions(request.outputParameterDefinitions),
                output_files=list(request.outputFileNames or []),
                snapshot_id=request.snapshotId,
                archive=archive,
                isolation=request.isolation or "shared",
                generic=generic,
            )
            try:
                await self._repo.insert(record)
            except BaseException as exc:
                await self._environments.drop(image, archive)
                if isinstance(exc, DuplicateKey):  # another controller of the group was first
                    raise _exists(name, version) from None
                raise
            service = self._make(record)
            self._services.put(service)
        service.pool.warm()
        log.info("service published", extra={"service": service.label, "user": caller.username})
        return service

    async def patch(
        self, caller: Identity, name: str, version: str, request: PublishWebServiceRequest
    ) -> Service:
        """Change only the fields present; a present ``snapshotId`` replaces the environment."""
        fields = request.model_fields_set
        await self.find(name, version)
        async with self._locked():
            old = self.get(name, version)
            access.check_manage(caller, old.record, "update")
            if old.model is not None and fields - {"description", "operationId", "runtimeType"}:
                raise BadRequestError(
                    f"'{name}' version '{version}' is a realtime service: change its model "
                    f"with PATCH /realtime-services/{name}/{version}"
                )
            record = dataclasses.replace(old.record)
            if "code" in fields:
                if not request.code:
                    raise BadRequestError("'code' cannot be empty")
                record.code = request.code
            if "description" in fields:
                record.description = request.description
            if "initCode" in fields:
                record.init_code = request.initCode
            if "operationId" in fields:
                record.operation_id = request.operationId
            if "inputParameterDefinitions" in fields:
                record.inputs = definitions(request.inputParameterDefinitions)
            if "outputParameterDefinitions" in fields:
                record.outputs = definitions(request.outputParameterDefinitions)
            if "outputFileNames" in fields:
                record.output_files = list(request.outputFileNames or [])
            if "isolation" in fields and request.isolation is not None:
                record.isolation = request.isolation
            new_environment = "snapshotId" in fields
            if new_environment:
                record.key = secrets.token_hex(8)
                record.image, record.archive, record.generic = await self._environments.make(
                    caller, request.snapshotId, record.key
                )
                record.snapshot_id = request.snapshotId
            try:
                await self._update(record)
            except BaseException:
                if new_environment:
                    await self._environments.drop(record.image, record.archive)
                raise
            # what the containers do not use: their pool stays
            only_metadata = fields <= {"description", "runtimeType", "operationId"}
            if only_metadata:
                old.record = record
                old.document = self._document(record)
                return old
            service = self._successor(old, record)
            self._services.put(service)
        await old.pool.close()
        if new_environment:
            await self._environments.drop(old.record.image, old.record.archive)
        service.pool.warm()
        log.info("service updated", extra={"service": service.label, "user": caller.username})
        return service

    # --- realtime services --------------------------------------------------------------

    async def check_realtime(
        self, caller: Identity, name: str, version: str | None, *, patch: bool = False
    ) -> None:
        """Whether ``caller`` may publish a version of ``name`` (``patch``: change that
        ``version``), asked before the model is read: one who may not gets the 403 (or
        404) without making the controller spool megabytes first."""
        check_name(name)
        if version is not None:
            check_version(version)
        if patch and version is not None:
            service = await self.find(name, version)
            access.check_manage(caller, service.record, "update")
            if service.model is None:
                raise _not_realtime(name, version)
            return
        await self.versions_now(name)
        self._check_new(caller, name, version)

    async def publish_realtime(
        self, caller: Identity, name: str, version: str | None, form: RealtimeForm
    ) -> Service:
        """A version scoring the form's model (checked, and converted to ONNX, in a
        single-use container first). ``check_realtime`` asked, before the form was read,
        whether the caller may; the answer is asked again under the lock."""
        check_name(name)
        version = check_version(version) if version is not None else str(uuid.uuid4())
        if form.model is None:
            raise BadRequestError("the form has no file part named 'model'")
        async with self._models.prepare(form.model, caller.username) as (schema, onnx):
            service = await self._add_realtime(caller, name, version, form, schema, onnx)
        service.pool.warm()
        log.info(
            "realtime service published", extra={"service": service.label, "user": caller.username}
        )
        return service

    async def patch_realtime(
        self, caller: Identity, name: str, version: str, form: RealtimeForm
    ) -> Service:
        """Change what the form holds: a new model gets new containers; a description or
        an operation name alone keeps them."""
        old = await self.find(name, version)
        access.check_manage(caller, old.record, "update")
        if old.model is None:
            raise _not_realtime(name, version)
        if form.model is None:
            async with self._locked():
                old = self.get(name, version)
                access.check_manage(caller, old.record, "update")
                record = self._with_fields(old.record, form)
                await self._update(record)
                old.record = record
                old.document = self._document(record)
            return old
        async with self._models.prepare(form.model, caller.username) as (schema, onnx):
            old, service = await self._replace_model(caller, name, version, form, schema, onnx)
        await old.pool.close()
        await self._environments.drop(old.record.image, old.record.archive)
        service.pool.warm()
        log.info(
            "realtime service updated", extra={"service": service.label, "user": caller.username}
        )
        return service

    async def _add_realtime(
        self,
        caller: Identity,
        name: str,
        version: str,
        form: RealtimeForm,
        schema: ModelSchema,
        onnx: Path,
    ) -> Service:
        async with self._lock:
            self._check_new(caller, name, version)
            key = secrets.token_hex(8)
            image, archive = await self._keep_model(caller, key, onnx)
            record = _new_record(
                caller,
                name,
                version,
                key,
                runtime=REALTIME,
                code="",
                image=image,
                description=form.description,
                operation_id=form.operation_id,
                inputs=list(DEFINITIONS_IN),
                outputs=list(DEFINITIONS_OUT),
                archive=archive,
                generic=True,
                model_schema=schema.dumps(),
            )
            try:
                await self._repo.insert(record)
            except BaseException as exc:
                await self._environments.drop(image, archive)
                if isinstance(exc, DuplicateKey):
                    raise _exists(name, version, realtime=True) from None
                raise
            service = self._make(record)
            self._services.put(service)
        return service

    async def _replace_model(
        self,
        caller: Identity,
        name: str,
        version: str,
        form: RealtimeForm,
        schema: ModelSchema,
        onnx: Path,
    ) -> tuple[Service, Service]:
        """The version as it was, and as it is with the new model (its pool not started)."""
        async with self._locked():
            old = self.get(name, version)
            access.check_manage(caller, old.record, "update")
            if old.model is None:  # deleted and published again as Python meanwhile
                raise _not_realtime(name, version)
            record = self._with_fields(old.record, form)
            record.key = secrets.token_hex(8)
            record.image, record.archive = await self._keep_model(caller, record.key, onnx)
            record.model_schema = schema.dumps()
            try:
                await self._update(record)
            except BaseException:
                await self._environments.drop(record.image, record.archive)
                raise
            service = self._successor(old, record)
            self._services.put(service)
        return old, service

    def _check_new(self, caller: Identity, name: str, version: str | None) -> None:
        """``caller`` may publish ``version`` of ``name`` (``None``: a new GUID one)."""
        existing = self.versions(name)
        access.check_publish(caller, name, existing[0].record if existing else None)
        if version is not None and (name, version) in self._services:
            raise _exists(name, version, realtime=True)

    async def _keep_model(self, caller: Identity, key: str, onnx: Path) -> tuple[str, str]:
        """The base environment kept for a new realtime version, and its model's own copy
        in the shared directory (where every controller of the group finds it)."""
        image, _, _ = await self._environments.make(caller, None, key)
        archive = f"services/{key}.onnx"
        try:
            await asyncio.to_thread(archives.copy, onnx, self._settings.shared_dir / archive)
        except BaseException:
            await self._environments.drop(image, None)
            raise
        return image, archive

    @staticmethod
    def _with_fields(record: ServiceRecord, form: RealtimeForm) -> ServiceRecord:
        changed = dataclasses.replace(record)
        if "description" in form.present:
            changed.description = form.description
        if "operationId" in form.present:
            changed.operation_id = form.operation_id
        return changed

    async def delete(self, caller: Identity, name: str, version: str) -> Service:
        await self.find(name, version)
        async with self._locked():
            service = self.get(name, version)
            access.check_manage(caller, service.record, "delete")
            if not await self._repo.delete(service.record):
                raise _Stale(name, version)
            self._services.remove(name, version)
            forget_service(name, version)
        await service.pool.close()
        await self._environments.drop(service.record.image, service.record.archive)
        log.info("service deleted", extra={"service": service.label, "user": caller.username})
        return service

    async def set_pool(
        self, caller: Identity, name: str, version: str, initial: int | None, maximum: int | None
    ) -> Service:
        def sizes() -> tuple[int, int]:
            return requested_sizes(self._settings, initial, maximum)

        action = "create or update the pool of"
        service, first, most = await self._store_pool(caller, name, version, action, sizes)
        await service.pool.resize(first, most)
        return service

    async def delete_pool(self, caller: Identity, name: str, version: str) -> Service:
        """Remove the dedicated pool: no container stays warm; requests start one on demand."""
        action = "delete the pool of"
        most = self._settings.service_pool_max
        service, _, _ = await self._store_pool(caller, name, version, action, lambda: (0, most))
        await service.pool.resize(0, most)
        await service.pool.drain()
        return service

    async def _store_pool(
        self,
        caller: Identity,
        name: str,
        version: str,
        action: str,
        sizes: Callable[[], tuple[int, int]],
    ) -> tuple[Service, int, int]:
        """Record a version's new pool sizes; under the lock, so that a concurrent patch
        neither loses them nor is overwritten by the record as it was before."""
        await self.find(name, version)
        async with self._lock:
            service = self.get(name, version)
            access.check_manage(caller, service.record, action)
            initial, maximum = sizes()
            await self._repo.set_pool(name, version, initial, maximum)
            service.record.pool_initial, service.record.pool_max = initial, maximum
        return service, initial, maximum

    async def recycle(self, name: str, version: str) -> Service:
        """Replace a version's containers: a fresh pool warms up at once; requests running
        on the old containers finish there, then those containers go."""
        async with self._lock:
            old = self.get(name, version)
            service = self._successor(old, old.record)
            self._services.put(service)
        await old.pool.close()
        service.pool.warm()
        log.info("service pool recycled", extra={"service": service.label})
        return service

    async def keep_pools_trim(self) -> None:
        """Run forever: remove extra service containers that stayed idle."""
        while True:
            await asyncio.sleep(min(30.0, self._settings.service_pool_idle / 2))
            for service in self.all():
                try:
                    await service.pool.shrink()
                except O16nError as exc:
                    log.warning(
                        "pool trim failed", extra={"service": service.label, "error": exc.message}
                    )

    async def sweep(self) -> int:
        """Remove service tarballs no service names (a publish killed half-way left its
        hard link); under the lock, so no publish of this controller is half-way
        meanwhile. The stored rows count too: another controller sharing the directory
        publishes versions this one has not loaded."""
        async with self._lock:
            recorded = {s.record.archive for s in self.all() if s.record.archive}
            recorded |= {r.archive for r in await self._repo.all() if r.archive}
            return await self._environments.sweep_files(recorded)

    async def on_exit(self, key: str, note: str = "") -> None:
        """A container stopped by itself: the pool it belonged to replaces it."""
        for service in self.all():
            service.pool.on_exit(key)

    def environments(self) -> set[str]:
        """The environments the published services use."""
        return {s.record.image for s in self.all()}

    async def close(self) -> None:
        for service in self.all():
            await service.pool.close()

    # --- the group: what other controllers changed ------------------------------------------

    async def watch(self, interval: float = 1.0) -> None:
        """Run forever: bring the catalogue in line with the store when another controller
        of the group (docs/web-nodes.md) published, changed or deleted a version."""
        seen = await self._repo.changes()
        await self.refresh()  # what changed between the load and now
        while True:
            await asyncio.sleep(interval)
            try:
                now = await self._repo.changes()
                if now != seen:
                    await self.refresh()
                    seen = now
            except O16nError as exc:
                log.warning("catalogue refresh failed", extra={"error": exc.message})
            except Exception:  # the database, say: try again at the next round
                log.exception("catalogue refresh failed")

    async def refresh(self) -> None:
        """Versions the store has and the catalogue does not get a pool of this controller;
        those gone from the store lose theirs; a changed version gets a new pool when what
        its containers run changed, its new sizes or description otherwise. The one that
        deleted a version removes its environment, not this."""
        started: list[Service] = []
        resized: list[Service] = []
        ended: list[Service] = []
        async with self._lock:
            stored = {(r.name, r.version): r for r in await self._repo.all()}
            for service in self.all():
                name, version = service.record.name, service.record.version
                record = stored.pop((name, version), None)
                if record is None:
                    self._services.remove(name, version)
                    forget_service(name, version)
                    ended.append(service)
                elif record != service.record:
                    if _containers_differ(record, service.record):
                        successor = self._successor(service, record)
                        self._services.put(successor)
                        ended.append(service)
                        started.append(successor)
                    else:
                        sizes = (record.pool_initial, record.pool_max)
                        if sizes != (service.record.pool_initial, service.record.pool_max):
                            resized.append(service)
                        service.record = record
                        service.document = self._document(record)
            for record in stored.values():
                service = self._make(record)
                self._services.put(service)
                started.append(service)
            if stored:  # the latest version is the last, on every controller alike
                self._services.sort()
        for service in ended:
            await service.pool.close()
        for service in resized:
            first, most = pool_sizes(self._settings, service.record)
            await service.pool.resize(first, most)
            if first == 0:  # its pool was deleted: no container stays warm
                await service.pool.drain()
        for service in started:
            service.pool.warm()
        if started or ended:
            log.info("catalogue refreshed", extra={"started": len(started), "ended": len(ended)})

    # --- internals ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """The lock, for a change of a version; one that another controller of the group
        changed meanwhile is refused (409), deleted meanwhile is a 404, once the catalogue
        has read the store again: the caller's next try sees the version as it is."""
        try:
            async with self._lock:
                yield
        except _Stale as stale:
            try:
                await self.refresh()
            except Exception:  # the database, say: the watch reads it again within a second
                log.exception("catalogue refresh after a stale change failed")
            else:
                self.get(stale.name, stale.version)  # gone: its 404
            raise ConflictError(
                f"'{stale.name}' version '{stale.version}' was changed or deleted on "
                "another controller meanwhile; nothing was changed here: read it again "
                "and retry"
            ) from None

    async def _update(self, record: ServiceRecord) -> None:
        """Store ``record`` over the row as this controller last read it (``_locked``)."""
        if not await self._repo.update(record):
            raise _Stale(record.name, record.version)

    def _document(self, record: ServiceRecord) -> dict[str, Any]:
        batch = self.batch_document(record) if self.batch_document is not None else None
        return swagger.build(record, batch)

    def _make(self, record: ServiceRecord) -> Service:
        model: ModelSchema | None = None
        if record.model_schema is not None:
            model = load_schema(record.model_schema)
        return Service(
            record, self._launcher.pool(record), inputs(record), self._document(record), model
        )

    def _successor(self, old: Service, record: ServiceRecord) -> Service:
        """The version with a new pool in place of ``old``'s; the pool's counts carry over
        (``/metrics`` has them as counters since the version was published)."""
        service = self._make(record)
        service.pool.served, service.pool.rejected = old.pool.served, old.pool.rejected
        return service


#: What a version's containers run: a change to any of these needs new containers.
_CONTAINER_FIELDS = (
    "key",
    "image",
    "archive",
    "code",
    "init_code",
    "inputs",
    "outputs",
    "output_files",
    "isolation",
    "generic",
    "model_schema",
)


def _containers_differ(new: ServiceRecord, old: ServiceRecord) -> bool:
    return any(getattr(new, f) != getattr(old, f) for f in _CONTAINER_FIELDS)


def _new_record(
    caller: Identity, name: str, version: str, key: str, **fields: Any
) -> ServiceRecord:
    """A version ``caller`` publishes now."""
    now = time.time()
    return ServiceRecord(
        name=name,
        version=version,
        key=key,
        publisher_id=caller.user_id,
        publisher_name=caller.username,
        created_at=now,
        creation_time=dotnet_timestamp(now),
        **fields,
    )


class _Stale(Exception):
    """The row of a version is gone or at another revision than this controller's."""

    def __init__(self, name: str, version: str) -> None:
        super().__init__(name, version)
        self.name, self.version = name, version


def _not_realtime(name: str, version: str) -> BadRequestError:
    return BadRequestError(
        f"'{name}' version '{version}' is a Python service: change it with "
        f"PATCH /services/{name}/{version}"
    )


def _exists(name: str, version: str, realtime: bool = False) -> ConflictError:
    where = "realtime-services" if realtime else "services"
    return ConflictError(
        f"web service '{name}' version '{version}' already exists; "
        f"PATCH /{where}/{name}/{version} to change it, or publish another version"
    )


#: The app's service registry.
SERVICES = web.AppKey("services", ServiceRegistry)
