"""Bringing up a service's containers: its pool, and each container restored from the
service's workspace with its initCode run once (a realtime service's: its model loaded)."""

from __future__ import annotations

import contextlib
import json
import logging

from controller.errors import RuntimeFailure
from controller.runtime.blobs import open_source
from controller.runtime.sandbox import Sandbox
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.warm_pool import WarmPool
from controller.services.environments import ServiceEnvironments
from controller.services.pool import ServicePool, Spawn
from controller.services.sizing import pool_sizes
from controller.settings import Settings
from controller.store.services import ServiceRecord

log = logging.getLogger(__name__)


class ServiceLauncher:
    def __init__(
        self,
        settings: Settings,
        sandboxes: Sandboxes,
        environments: ServiceEnvironments,
        spawn: Spawn,
        warm: WarmPool | None = None,
    ) -> None:
        self._settings = settings
        self._sandboxes = sandboxes
        self._environments = environments
        self._spawn = spawn
        self._warm = warm

    def pool(self, record: ServiceRecord) -> ServicePool:
        """A new, empty pool of ``record``'s containers (``warm()`` fills it)."""
        settings = self._settings
        initial, maximum = pool_sizes(settings, record)
        return ServicePool(
            f"{record.name}/{record.version}",
            lambda urgent: self.launch(record, urgent),
            self._sandboxes.destroy,
            self._spawn,
            initial=initial,
            maximum=maximum,
            queue_max=settings.service_queue_max,
            queue_wait=settings.service_queue_wait,
            idle_timeout=settings.service_pool_idle,
        )

    async def launch(self, record: ServiceRecord, urgent: bool) -> Sandbox:
        """A container for ``record``, restored and with initCode run once: from the warm
        pool (modules preloaded) when a request waits for it and the service runs on the
        current base environment unchanged, otherwise started from the service's own."""
        sandbox = None
        if urgent and self._warm is not None and await self._environments.runs_on_base(record):
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
                    path = self._settings.shared_dir / record.archive
                    try:
                        blob = await stack.enter_async_context(open_source(path))
                    except FileNotFoundError:  # this version's environment was replaced
                        raise RuntimeFailure(
                            f"the files of {record.name}/{record.version} were replaced"
                        ) from None
                if record.model_schema is not None:  # a realtime service: its ONNX graph
                    op, args = "realtime_init", {"schema": json.loads(record.model_schema)}
                else:
                    op, args = (
                        "service_init",
                        {
                            "code": record.code,
                            "init_code": record.init_code,
                            "inputs": record.inputs,
                            "outputs": record.outputs,
                            "output_files": record.output_files,
                            "isolation": record.isolation,
                        },
                    )
                reply, _ = await sandbox.call(
                    op, args, blob=blob, timeout=self._settings.service_init_timeout
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
