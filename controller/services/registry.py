"""The published services, in memory and in the store: publish, patch, delete, pools.

Publishing copies what a service needs — its own environment (kept by the engine's store) and
its own hard link of the snapshot's tarball — so deleting the snapshot afterwards
(Microsoft's SDK does it at once) never breaks the service. Each version gets a warm pool
as soon as it is published, and again when the controller restarts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from o16n_agent.codec import canonical_type

from controller.auth.roles import Identity
from controller.clock import dotnet_timestamp
from controller.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    O16nError,
    RuntimeFailure,
)
from controller.runtime.agent_link import RUNTIME
from controller.runtime.blobs import open_source
from controller.runtime.sandboxes import Sandbox, Sandboxes
from controller.runtime.warm_pool import WarmPool
from controller.services import access, swagger
from controller.services.models import PublishWebServiceRequest, check_name, check_version
from controller.services.pool import ServicePool, Spawn
from controller.settings import Settings
from controller.snapshots import archives
from controller.snapshots.manager import SnapshotManager
from controller.store.services import ServiceRecord, ServicesRepo

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Service:
    record: ServiceRecord
    pool: ServicePool
    inputs: list[tuple[str, str, str]] = field(default_factory=list)  # name, kind, declared
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.record.name}/{self.record.version}"


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
        self._warm = warm
        self._base_origin: str | None = None
        self._on_base: dict[str, bool] = {}
        self._repo = repo
        self._snapshots = snapshots
        self._sandboxes = sandboxes
        self._spawn = spawn
        self._services: dict[tuple[str, str], Service] = {}
        self._lock = asyncio.Lock()
        #: the batch paths and definitions of a per-service document, when batch is served
        self.batch_document: Callable[[ServiceRecord], dict[str, Any]] | None = None

    # --- lookup ---------------------------------------------------------------------------

    def get(self, name: str, version: str) -> Service:
        service = self._services.get((name, version))
        if service is None:
            raise NotFoundError(f"no web service '{name[:128]}' with version '{version[:64]}'")
        return service

    def versions(self, name: str) -> list[Service]:
        """Every version of ``name``, oldest first (the SDK takes the last as the latest)."""
        return [s for (n, _), s in self._services.items() if n == name]

    def all(self) -> list[Service]:
        return list(self._services.values())

    def to_json(self, service: Service, caller: Identity) -> dict[str, Any]:
        r = service.record
        see_code = access.can_see_code(caller, r)
        return {
            "name": r.name,
            "version": r.version,
            "versionPublishedBy": r.publisher_name,
            "creationTime": r.creation_time,
            "snapshotId": r.snapshot_id,
            "runtimeType": r.runtime,
            "initCode": r.init_code if see_code else None,
            "code": r.code if see_code else None,
            "description": r.description,
            "operationId": r.operation_id,
            "inputParameterDefinitions": r.inputs,
            "outputParameterDefinitions": r.outputs,
            "outputFileNames": r.output_files,
            "myPermissionOnService": "read/write" if access.can_manage(caller, r) else "read only",
        }

    # --- lifecycle ------------------------------------------------------------------------

    async def load(self) -> None:
        """At start: every stored service, its pool warming in the background."""
        for record in await self._repo.all():
            service = self._make(record)
            self._services[(record.name, record.version)] = service
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
                raise ConflictError(
                    f"web service '{name}' version '{version}' already exists; "
                    f"PATCH /services/{name}/{version} to change it, or publish another version"
                )
            if not request.code:
                raise BadRequestError("'code' is required to publish a web service")
            key = secrets.token_hex(8)
            image, archive, generic = await self._environment(caller, request.snapshotId, key)
            now = time.time()
            record = ServiceRecord(
                name=name,
                version=version,
                key=key,
                publisher_id=caller.user_id,
                publisher_name=caller.username,
                created_at=now,
                creation_time=dotnet_timestamp(now),
                runtime=RUNTIME,
                code=request.code,
                image=image,
                description=request.description,
                init_code=request.initCode,
                operation_id=request.operationId,
                inputs=_definitions(request.inputParameterDefinitions),
                outputs=_definitions(request.outputParameterDefinitions),
                output_files=list(request.outputFileNames or []),
                snapshot_id=request.snapshotId,
                archive=archive,
                isolation=request.isolation or "shared",
                generic=generic,
            )
            try:
                await self._repo.insert(record)
            except BaseException:
                await self._drop_environment(image, archive)
                raise
            service = self._make(record)
            self._services[(name, version)] = service
        service.pool.warm()
        log.info("service published", extra={"service": service.label, "user": caller.username})
        return service

    async def patch(
        self, caller: Identity, name: str, version: str, request: PublishWebServiceRequest
    ) -> Service:
        """Change only the fields present; a present ``snapshotId`` replaces the environment."""
        fields = request.model_fields_set
        async with self._lock:
            old = self.get(name, version)
            access.check_manage(caller, old.record, "update")
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
                record.inputs = _definitions(request.inputParameterDefinitions)
            if "outputParameterDefinitions" in fields:
                record.outputs = _definitions(request.outputParameterDefinitions)
            if "outputFileNames" in fields:
                record.output_files = list(request.outputFileNames or [])
            if "isolation" in fields and request.isolation is not None:
                record.isolation = request.isolation
            new_environment = "snapshotId" in fields
            if new_environment:
                record.key = secrets.token_hex(8)
                record.image, record.archive, record.generic = await self._environment(
                    caller, request.snapshotId, record.key
                )
                record.snapshot_id = request.snapshotId
            try:
                await self._repo.update(record)
            except BaseException:
                if new_environment:
                    await self._drop_environment(record.image, record.archive)
                raise
            # what the containers do not use: their pool stays
            only_metadata = fields <= {"description", "runtimeType", "operationId"}
            if only_metadata:
                old.record = record
                old.document = self._document(record)
                return old
            service = self._make(record)
            self._services[(name, version)] = service
        await old.pool.close()
        if new_environment:
            await self._drop_environment(old.record.image, old.record.archive)
        service.pool.warm()
        log.info("service updated", extra={"service": service.label, "user": caller.username})
        return service

    async def delete(self, caller: Identity, name: str, version: str) -> Service:
        async with self._lock:
            service = self.get(name, version)
            access.check_manage(caller, service.record, "delete")
            await self._repo.delete(name, version)
            del self._services[(name, version)]
        await service.pool.close()
        await self._drop_environment(service.record.image, service.record.archive)
        log.info("service deleted", extra={"service": service.label, "user": caller.username})
        return service

    async def set_pool(
        self, caller: Identity, name: str, version: str, initial: int | None, maximum: int | None
    ) -> Service:
        def sizes() -> tuple[int, int]:
            first = self._settings.service_pool_initial if initial is None else initial
            most = max(first, 1) if maximum is None else maximum
            if first > most:
                raise BadRequestError(
                    f"InitialPoolSize ({first}) must not exceed MaxPoolSize ({most})"
                )
            limit = self._settings.service_pool_limit
            if most > limit:
                raise BadRequestError(f"MaxPoolSize may be at most {limit} on this server")
            return first, most

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
            service = self._make(old.record)
            service.pool.served, service.pool.rejected = old.pool.served, old.pool.rejected
            self._services[(name, version)] = service
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
        hard link); under the lock, so no publish is half-way meanwhile."""
        async with self._lock:
            recorded = {s.record.archive for s in self.all() if s.record.archive}
            removed = await asyncio.to_thread(
                archives.sweep, self._settings.data_dir / "services", recorded, 0.0
            )
        if removed:
            log.info("removed service files left behind", extra={"count": removed})
        return removed

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

    # --- internals ------------------------------------------------------------------------

    def _document(self, record: ServiceRecord) -> dict[str, Any]:
        batch = self.batch_document(record) if self.batch_document is not None else None
        return swagger.build(record, batch)

    def _make(self, record: ServiceRecord) -> Service:
        settings = self._settings
        initial = (
            settings.service_pool_initial if record.pool_initial is None else record.pool_initial
        )
        maximum = settings.service_pool_max if record.pool_max is None else record.pool_max
        label = f"{record.name}/{record.version}"
        pool = ServicePool(
            label,
            lambda urgent: self._launch(record, urgent),
            self._sandboxes.destroy,
            self._spawn,
            initial=initial,
            maximum=max(maximum, initial, 1),
            queue_max=settings.service_queue_max,
            queue_wait=settings.service_queue_wait,
            idle_timeout=settings.service_pool_idle,
        )
        inputs = [(p["name"], _kind(p["type"]), p["type"]) for p in record.inputs]
        return Service(record, pool, inputs, self._document(record))

    async def _launch(self, record: ServiceRecord, urgent: bool) -> Sandbox:
        """A container for ``record``, restored and with initCode run once: from the warm
        pool (modules preloaded) when a request waits for it and the service runs on the
        current base environment unchanged, otherwise started from the service's own."""
        sandbox = None
        if urgent and self._warm is not None and await self._runs_on_base(record):
            sandbox = await self._warm.take()
        if sandbox is None:
            sandbox = await self._sandboxes.launch(
                "service",
                owner=record.publisher_name,
                ident=f"{record.name}:{record.version}"[:200],
                environment=record.image,
            )
        try:
            async with contextlib.AsyncExitStack() as stack:
                blob = None  # the tarball streams from its file to the agent
                if record.archive:
                    path = self._settings.data_dir / record.archive
                    try:
                        blob = await stack.enter_async_context(open_source(path))
                    except FileNotFoundError:  # this version's environment was replaced
                        raise RuntimeFailure(
                            f"the workspace of {record.name}/{record.version} was replaced"
                        ) from None
                reply, _ = await sandbox.call(
                    "service_init",
                    {
                        "code": record.code,
                        "init_code": record.init_code,
                        "inputs": record.inputs,
                        "outputs": record.outputs,
                        "output_files": record.output_files,
                        "isolation": record.isolation,
                    },
                    blob=blob,
                    timeout=self._settings.service_init_timeout,
                )
        except BaseException:
            await self._sandboxes.destroy(sandbox)
            raise
        if reply.get("init_error"):
            log.warning(
                "service initCode failed; requests will report it",
                extra={"service": f"{record.name}/{record.version}"},
            )
        return sandbox

    async def _runs_on_base(self, record: ServiceRecord) -> bool:
        """Whether the service's environment was kept from the base environment unchanged,
        asked of the store once per environment (a service's reference is unique to its
        environment, so the answer stays)."""
        if not record.generic:
            return False
        known = self._on_base.get(record.image)
        if known is None:
            store = self._sandboxes.environments
            if self._base_origin is None:
                self._base_origin = await store.origin(store.base)
            try:
                known = await store.origin(record.image) == self._base_origin
            except NotFoundError:
                known = False
            self._on_base[record.image] = known
        return known

    async def _environment(
        self, caller: Identity, snapshot_id: str | None, key: str
    ) -> tuple[str, str | None, bool]:
        """The service's own environment and tarball copy (from a snapshot, or a fresh
        runtime), and whether that environment is the base one unchanged."""
        store = self._sandboxes.environments
        if snapshot_id is None:
            return await store.keep(store.base, "service"), None, True
        snapshot = await self._snapshots.get(caller, snapshot_id)
        relative = f"services/{key}.tar.gz"
        await asyncio.to_thread(
            archives.copy,
            self._snapshots.archive_path(snapshot),
            self._settings.data_dir / relative,
        )
        # A snapshot whose container changed nothing of its environment runs on the base one.
        source = store.base if snapshot.pristine else snapshot.image
        return await store.keep(source, "service"), relative, snapshot.pristine

    async def _drop_environment(self, environment: str, archive: str | None) -> None:
        if archive:
            await asyncio.to_thread(archives.remove, self._settings.data_dir / archive)
        if not await self._sandboxes.environments.release(environment):  # still in use
            self._spawn(f"image-drop:{environment}", self._drop_image_later(environment))

    async def _drop_image_later(self, environment: str) -> None:
        """Release the environment of a deleted service once the container that held it has
        gone (a pool start still in flight when the service was deleted): tried for about a
        minute; after that, or while the engine is away, the periodic sweep takes it."""
        for delay in IMAGE_DROP_RETRIES:
            await asyncio.sleep(delay)
            try:
                if await self._sandboxes.environments.release(environment):
                    return
            except O16nError:
                return


#: seconds between the tries to remove a deleted service's image that a container held
IMAGE_DROP_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def _definitions(params: Any) -> list[dict[str, str]]:
    return [{"name": p.name, "type": p.type} for p in params or []]


def _kind(declared: str) -> str:
    return canonical_type(declared) or "character"


#: The app's service registry.
SERVICES = web.AppKey("services", ServiceRegistry)
