"""Where a batch runs. Every record and result lives in the database, so a restarted
controller resumes the records that had not finished; there is no wall-clock limit.

In a group of controllers sharing the database, batches run on the one holding the
``batches`` lease (``lead``): it takes every unfinished batch, whichever controller
recorded it, and stops those cancelled elsewhere; when its lease goes, it stops them all,
keeping what is done, and the next holder resumes them.

Records are checked before anything is stored (400 naming the record and its columns).
``parallelCount`` workers take records in order and run each like a consume request in
the service's warm pool (waiting, not failing, when the pool is busy). Results are written
in small groups to keep SQLite off the per-record path. A record whose code fails is a
``success: false`` result, not a failed batch; ``Failed`` is for infrastructure trouble.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controller.auth.roles import Identity
from controller.errors import (
    BadRequestError,
    NotFoundError,
    O16nError,
    PayloadTooLargeError,
    RuntimeFailure,
    ServiceUnavailableError,
)
from controller.services import consume
from controller.services.registry import Service, ServiceRegistry
from controller.settings import Settings
from controller.store.batches import BatchesRepo, BatchRecord
from controller.tasks import TaskSupervisor

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 10
FLUSH_EVERY = 64
FLUSH_SECONDS = 0.5
LOST_RUNS_MAX = 3  # runs of one record whose compute node was lost, before its failure is kept
START_FAILURES = 20  # consecutive failed container starts before a batch is Failed
LEAD_POLL = 1.0  # seconds between the lease holder's looks for batches recorded or cancelled


@dataclass(eq=False)
class Job:
    record: BatchRecord
    cancelled: bool = False
    task: asyncio.Task[None] | None = None
    buffer: list[tuple[int, Any]] = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)

    def stopped(self) -> bool:
        """Whether the batch was cancelled (asked anew after each await)."""
        return self.cancelled


class BatchRunner:
    def __init__(
        self,
        settings: Settings,
        repo: BatchesRepo,
        registry: ServiceRegistry,
        tasks: TaskSupervisor,
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._registry = registry
        self._tasks = tasks
        self._jobs: dict[str, Job] = {}
        #: whether ``lead`` runs here: a new batch then starts at once, not at its next look
        self._leading = False

    # --- API ------------------------------------------------------------------------------

    def parallel_count(self, raw: str | None) -> int:
        cap = self._settings.batch_max_parallel
        if raw is None or raw == "":
            return min(DEFAULT_PARALLEL, cap)
        try:
            value = int(raw)
        except ValueError:
            raise BadRequestError(f"parallelCount must be an integer, not {raw[:20]!r}") from None
        if value <= 0 or value > cap:
            raise BadRequestError(f"parallelCount must be between 1 and {cap}, not {value}")
        return value

    async def start(
        self, caller: Identity, service: Service, records: Any, parallel: int
    ) -> BatchRecord:
        inputs = self._check(service, records)
        record = BatchRecord(
            id=str(uuid.uuid4()),
            service_name=service.record.name,
            service_version=service.record.version,
            owner_id=caller.user_id,
            parallel_count=parallel,
            state="Pending",
            total=len(inputs),
            completed=0,
            deleted=False,
            error=None,
            created_at=time.time(),
        )
        await self._repo.create(record, inputs)
        if self._leading and record.id not in self._jobs:
            self._launch(Job(record))
        log.info("batch started", extra={"batch": record.id, "items": record.total})
        return record

    async def get(self, caller: Identity, service: Service, batch_id: str) -> BatchRecord:
        record = await self._find(caller, service, batch_id)
        if record.deleted:
            raise NotFoundError(f"no batch execution '{batch_id[:64]}' of {service.label}")
        return record

    async def _find(self, caller: Identity, service: Service, batch_id: str) -> BatchRecord:
        """The caller's batch of ``service``, deleted or not; 404 for anything else."""
        record = await self._repo.get(batch_id) if len(batch_id) <= 64 else None
        if (
            record is None
            or record.owner_id != caller.user_id
            or (record.service_name, record.service_version)
            != (service.record.name, service.record.version)
        ):
            raise NotFoundError(f"no batch execution '{batch_id[:64]}' of {service.label}")
        return record

    async def results(self, record: BatchRecord) -> list[Any]:
        return await self._repo.results(record.id)

    async def result(self, record: BatchRecord, index: int) -> Any:
        try:
            return await self._repo.result(record.id, index)
        except KeyError:
            raise NotFoundError(
                f"batch execution '{record.id}' has no record {index} "
                f"(records are numbered 0 to {record.total - 1})"
            ) from None

    async def result_file(self, record: BatchRecord, index: int, name: str) -> str | None:
        """Output file ``name`` of record ``index`` as base64, or ``None``."""
        try:
            return await self._repo.result_file(record.id, index, name)
        except KeyError:
            raise NotFoundError(
                f"batch execution '{record.id}' has no record {index} "
                f"(records are numbered 0 to {record.total - 1})"
            ) from None

    async def ids(self, caller: Identity, service: Service) -> list[str]:
        return await self._repo.ids(service.record.name, service.record.version, caller.user_id)

    async def cancel(self, caller: Identity, service: Service, batch_id: str) -> None:
        """Stop and forget a batch. Cancelling one that ended, or was cancelled, is fine."""
        record = await self._find(caller, service, batch_id)
        if record.deleted:
            return
        finished = record.state in ("Complete", "Failed")
        # the row first: until it is marked, ``lead`` would take a batch missing from the
        # jobs for one to resume, and start it again
        await self._repo.delete(record.id, record.state if finished else "Canceled")
        job = self._jobs.pop(record.id, None)
        if job is not None:
            job.cancelled = True
            if job.task is not None:
                job.task.cancel()

    async def lead(self, poll: float = LEAD_POLL) -> None:
        """Run while this controller holds the group's ``batches`` lease (until cancelled):
        run every unfinished batch (those a stopped controller left, those another one
        recorded) and stop the ones cancelled meanwhile; when it ends, stop every batch,
        keeping the results done, for the next holder to resume."""
        self._leading = True
        try:
            while True:
                running = {batch_id for batch_id, job in self._jobs.items() if not job.cancelled}
                try:
                    unfinished = await self._repo.unfinished()
                except Exception:  # the database, a moment: the batches running go on
                    log.exception("looking for batches to run failed")
                    await asyncio.sleep(poll)
                    continue
                for record in unfinished:
                    if record.id not in self._jobs:
                        log.info("batch resumed", extra={"batch": record.id})
                        self._launch(Job(record))
                for gone in running - {record.id for record in unfinished}:
                    # cancelled on another controller (or just ended: nothing to stop then)
                    job = self._jobs.pop(gone, None)
                    if job is not None and job.task is not None:
                        job.cancelled = True
                        job.task.cancel()
                await asyncio.sleep(poll)
        finally:
            self._leading = False
            jobs, self._jobs = list(self._jobs.values()), {}
            for job in jobs:
                if job.task is not None:
                    job.task.cancel()  # not ``cancelled``: what is done is kept
            await asyncio.gather(
                *(job.task for job in jobs if job.task is not None), return_exceptions=True
            )

    # --- the work ---------------------------------------------------------------------------

    def _launch(self, job: Job) -> None:
        self._jobs[job.record.id] = job
        job.task = self._tasks.spawn(f"batch:{job.record.id}", self._run(job))

    async def _run(self, job: Job) -> None:
        record = job.record
        try:
            if not await self._repo.start(record.id):
                return  # it finished (or was cancelled) since it was read: nothing to run
            queue = iter(await self._repo.pending_items(record.id))
            workers = [
                asyncio.create_task(self._worker(job, queue)) for _ in range(record.parallel_count)
            ]
            try:
                await asyncio.gather(*workers)
            except BaseException:  # one failed, or the batch stops: so do the others
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
            await self._flush(job)
            await self._repo.set_state(record.id, "Complete")
            log.info("batch complete", extra={"batch": record.id})
        except asyncio.CancelledError:
            if not job.cancelled:  # the controller is stopping: keep what is done
                await asyncio.shield(self._flush(job))
            raise
        except O16nError as exc:
            await self._flush(job)
            await self._repo.set_state(record.id, "Failed", exc.message)
            log.warning("batch failed", extra={"batch": record.id, "error": exc.message})
        finally:
            if self._jobs.get(record.id) is job:
                del self._jobs[record.id]

    async def _worker(self, job: Job, queue: Any) -> None:
        timeout = self._settings.consume_timeout
        for index, inputs in queue:
            if job.cancelled:
                return
            # ``find``: the version may be one another controller of the group published a
            # moment ago, not in this catalogue yet
            service = await self._registry.find(job.record.service_name, job.record.service_version)
            failures = lost_runs = 0
            while True:
                try:
                    result = await consume.run(service, inputs, timeout, again_if_lost=True)
                    break
                except consume.NodeLost as lost:
                    # its container went with its compute node: the record runs again on
                    # another container (the pool replaces the lost ones elsewhere), a few
                    # times at most (a node that keeps coming and going is not waited out)
                    lost_runs += 1
                    if job.stopped():
                        return
                    if lost_runs > LOST_RUNS_MAX:
                        result = lost.result
                        break
                    log.info("batch record resumed elsewhere", extra={"batch": job.record.id})
                    service = self._registry.get(
                        job.record.service_name, job.record.service_version
                    )
                except ServiceUnavailableError as exc:
                    # A busy pool is waited for, however long; a pool whose containers keep
                    # failing to start is infrastructure trouble: the batch fails.
                    failures = failures + 1 if service.pool.last_error else 0
                    if failures >= START_FAILURES:
                        raise RuntimeFailure(
                            f"the containers of {service.label} cannot start: {exc.message}"
                        ) from None
                    await asyncio.sleep(0.5)
                    service = self._registry.get(
                        job.record.service_name, job.record.service_version
                    )
                except BadRequestError as exc:
                    result = consume.failure(service, exc.message)
                    break
            job.buffer.append((index, result))
            if len(job.buffer) >= FLUSH_EVERY or time.monotonic() - job.flushed_at > FLUSH_SECONDS:
                await self._flush(job)

    async def _flush(self, job: Job) -> None:
        if not job.buffer:
            return
        items, job.buffer = job.buffer, []
        job.flushed_at = time.monotonic()
        await self._repo.save_results(job.record.id, items)

    # --- validation -----------------------------------------------------------------------

    def _check(self, service: Service, records: Any) -> list[dict[str, Any]]:
        if not isinstance(records, list):
            raise BadRequestError("the batch body must be a JSON array of input records")
        if not records:
            raise BadRequestError("the batch has no records")
        limit = self._settings.batch_max_items
        if len(records) > limit:
            raise BadRequestError(f"a batch may hold at most {limit} records, not {len(records)}")
        if not service.inputs:
            raise BadRequestError(f"{service.label} takes no inputs; there is nothing to batch")
        declared = {name for name, _, _ in service.inputs}
        checked = []
        for i, item in enumerate(records):
            if not isinstance(item, dict):
                raise BadRequestError(f"record {i} is not a JSON object")
            missing = sorted(declared - item.keys())
            unknown = sorted(item.keys() - declared)
            if missing or unknown:
                parts = []
                if missing:
                    parts.append(f"missing columns {missing}")
                if unknown:
                    parts.append(f"unknown columns {unknown}")
                raise BadRequestError(
                    f"record {i} does not match the inputs of {service.label}: " + "; ".join(parts)
                )
            try:
                inputs = consume.check_inputs(service, item)
            except BadRequestError as exc:
                raise BadRequestError(f"record {i}: {exc.message}") from None
            try:
                consume.check_size(inputs)
            except PayloadTooLargeError as exc:
                raise PayloadTooLargeError(f"record {i}: {exc.message}") from None
            checked.append(inputs)
        return checked


def status_json(record: BatchRecord, results: list[Any] | None) -> dict[str, Any]:
    return {
        "state": record.state,
        "completedItemCount": record.completed,
        "totalItemCount": record.total,
        "parallelCount": record.parallel_count,
        "batchExecutionResults": results if results is not None else [],
    }


#: The app's batch runner.
BATCHES = web.AppKey("batches", BatchRunner)
