"""Health checks behind ``GET /status``, and how they are cached.

``Recent`` keeps a check's last answer for a short while and lets the callers that find it
stale share one run of the check, so that a load balancer (or a crowd of them) polling
``/status`` costs one set of checks a second, not one per request. ``HealthProbe`` holds
the engine and its runtime environment, when the engine reports them (slow: cached for
``ENGINE_CACHE_SECONDS`` more, so polling does not turn into a stream of engine calls),
free disk (one ``statvfs``) and the process's open files (one listing of
``/proc/self/fd``), both on threads of the probe's own."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiohttp import web

from controller.clock import dotnet_timestamp
from controller.errors import O16nError
from controller.limits import open_files_node
from controller.runtime.engines import Engine

#: Seconds the engine and runtime-image checks are reused for (they call the engine).
ENGINE_CACHE_SECONDS = 2.0
#: Seconds the disk check (and the open-file count) may take before it counts as failed.
DISK_TIMEOUT = 0.5
#: Seconds each engine call may take before the engine counts as failed: a daemon that
#: hangs shows as ``fail`` instead of holding every ``/status`` until its client gives up.
ENGINE_TIMEOUT = 2.0

T = TypeVar("T")


class EngineTimeout(O16nError):
    """An engine call took longer than the probe waits."""


@dataclass(frozen=True)
class Checked(Generic[T]):
    """One run's answer: ``value``, and when that run started (``started`` on the
    monotonic clock, ``at`` as a wall-clock timestamp, for the answer's readers)."""

    value: T
    started: float
    at: str


class Recent(Generic[T]):
    """The answer of ``check``, reused while it is younger than ``max_age`` seconds (counted
    from when its run started). Callers that find it older share one run of ``check``:
    at most one runs at a time, and it goes on if they are cancelled (a client hanging up
    wastes no check, and the next caller gets its answer). A run that raises caches
    nothing; its callers get the exception."""

    def __init__(
        self,
        check: Callable[[], Awaitable[T]],
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.runs = 0  # how many times ``check`` was started (what the tests count)
        self._check = check
        self._clock = clock
        self._last: Checked[T] | None = None
        self._running: asyncio.Task[Checked[T]] | None = None

    async def get(self) -> Checked[T]:
        last = self._last
        if last is not None and self._clock() - last.started < self.max_age:
            return last  # the common case: no task, no wait
        if self._running is None:
            self._running = asyncio.create_task(self._run(), name="health-check")
            # retrieved even when every caller was cancelled, so it is never "unretrieved"
            self._running.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._running)

    async def close(self) -> None:
        """Stop a run in progress (at shutdown)."""
        if self._running is not None:
            self._running.cancel()
            await asyncio.wait([self._running])

    async def _run(self) -> Checked[T]:
        self.runs += 1
        started, at = self._clock(), time.time()
        try:
            self._last = Checked(await self._check(), started, dotnet_timestamp(at))
            return self._last
        finally:
            self._running = None


def node(
    status: str, details: dict[str, Any] | None = None, components: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One node of the 9.3 ``StatusResponse`` tree."""
    return {"statusCode": status, "components": components or {}, "details": details or {}}


#: A compute node's status by its state: ``up`` passes; ``connecting`` warns, as a node
#: ``up`` but drained (``"draining": true``, the operator's choice) does; ``lost`` and
#: anything else fail.
NODE_STATES = {"up": "pass", "connecting": "warn"}
#: What ``/status`` (any signed-in user's) shows of a node: not its address or its last
#: error (an account, a host, ssh's words), which only the Owner's ``/admin/nodes`` shows.
NODE_PUBLIC = ("state", "draining", "version", "cpus", "containers", "load", "since")


def compute_node(described: dict[str, Any]) -> dict[str, Any]:
    """One node of ``NodeControl.describe`` as a status node."""
    details = {k: described[k] for k in NODE_PUBLIC if k in described}
    status = NODE_STATES.get(str(described.get("state")), "fail")
    if status == "pass" and described.get("draining") is True:
        status = "warn"
    return node(status, details)


def disk(path: Path, fail_below: int, warn_below: int) -> dict[str, Any]:
    usage = shutil.disk_usage(path)
    status = "fail" if usage.free < fail_below else "warn" if usage.free < warn_below else "pass"
    details = {"path": str(path.resolve()), "freeBytes": usage.free, "totalBytes": usage.total}
    return node(status, details)


#: A status node's rank: a parent is as bad as its worst child.
SEVERITY = {"pass": 0, "warn": 1, "fail": 2}


class HealthProbe:
    """Checks of the engine and its runtime environment (those the engine has hooks for,
    reused for ``ENGINE_CACHE_SECONDS``), of the data directory's disk and the shared
    directory's if it is another (``fail`` below ``disk_fail`` free bytes, ``warn``
    below ``disk_warn``) and of the open files."""

    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        disk_fail: int = 256 * 1024**2,
        disk_warn: int = 2 * 1024**3,
        engine_timeout: float = ENGINE_TIMEOUT,
        shared_dir: Path | None = None,
    ) -> None:
        self._engine = engine
        self._engine_timeout = engine_timeout
        self._image = engine.environments.base
        self._data_dir = data_dir
        self._shared_dir = shared_dir
        self._disk_fail = disk_fail
        self._disk_warn = disk_warn
        # threads of their own: the shared default executor may be busy with long file
        # work (tarballs being written), and ``/status`` must answer within a second
        # regardless; one each, so that a disk that hangs does not hold up the fd count
        self._disk_reader = ThreadPoolExecutor(1, thread_name_prefix="disk-check")
        self._fd_reader = ThreadPoolExecutor(1, thread_name_prefix="open-files-check")
        # and one for the shared directory: a network file system that hangs must not
        # make the local disk look hung too
        self._shared_reader = ThreadPoolExecutor(1, thread_name_prefix="shared-disk-check")
        self._engine_checks = Recent(self._engine_calls, ENGINE_CACHE_SECONDS)

    async def check(self) -> dict[str, dict[str, Any]]:
        """``{"dockerEngine", "runtimeImage", "computeNodes", "disk", "openFiles"}`` status
        nodes (the first three if the engine has the hooks for them, at most
        ``ENGINE_CACHE_SECONDS`` old, and their ``checkedAt`` says when they were checked)."""
        engine, disk_node, open_files = await asyncio.gather(
            self._engine_checks.get(), self._disk(), self._open_files()
        )
        return {**engine.value, "disk": disk_node, "openFiles": open_files}

    async def _disk(self) -> dict[str, Any]:
        """The data directory's disk; with a shared directory elsewhere, that one's too, as
        the child ``shared``, the worse of the two being the node's status."""
        if self._shared_dir is None:
            return await self._free(self._disk_reader, self._data_dir)
        own, shared = await asyncio.gather(
            self._free(self._disk_reader, self._data_dir),
            self._free(self._shared_reader, self._shared_dir),
        )
        status = max(own["statusCode"], shared["statusCode"], key=SEVERITY.__getitem__)
        return node(status, own["details"], {"shared": shared})

    async def _free(self, reader: ThreadPoolExecutor, path: Path) -> dict[str, Any]:
        check = asyncio.get_running_loop().run_in_executor(
            reader, disk, path, self._disk_fail, self._disk_warn
        )
        try:
            return await asyncio.wait_for(check, DISK_TIMEOUT)
        except TimeoutError:
            error = f"the disk did not answer within {DISK_TIMEOUT} s"
            return node("fail", {"path": str(path), "error": error})
        except OSError as exc:  # a network file system gone, say
            return node("fail", {"path": str(path), "error": exc.strerror or str(exc)})

    async def _open_files(self) -> dict[str, Any]:
        count = asyncio.get_running_loop().run_in_executor(self._fd_reader, open_files_node)
        try:
            return await asyncio.wait_for(count, DISK_TIMEOUT)
        except TimeoutError:
            return node("fail", {"error": f"/proc did not answer within {DISK_TIMEOUT} s"})

    async def close(self) -> None:
        await self._engine_checks.close()
        self._disk_reader.shutdown(wait=False, cancel_futures=True)
        self._fd_reader.shutdown(wait=False, cancel_futures=True)
        self._shared_reader.shutdown(wait=False, cancel_futures=True)

    async def _engine_calls(self) -> dict[str, dict[str, Any]]:
        """The checks that call the engine, side by side."""
        engine, nodes = await asyncio.gather(self._engine_and_image(), self._compute_nodes())
        return {**engine, **nodes}

    async def _compute_nodes(self) -> dict[str, dict[str, Any]]:
        """``computeNodes``: each node a child, judged by its state (``compute_node``); the
        component is ``fail`` when no node is up (all lost or still connecting), else
        ``warn`` when any is not ``up``. A lost node does not fail it while others answer:
        they still serve, and a ``fail`` would take this web node out of its load
        balancer."""
        control = self._engine.nodes
        if control is None:
            return {}
        checked = {"checkedAt": dotnet_timestamp(time.time())}
        try:
            described = await self._bounded(control.describe())
        except O16nError as exc:
            return {"computeNodes": node("fail", {"error": exc.message, **checked})}
        children = {str(n.get("name")): compute_node(n) for n in described}
        states = [str(n.get("state")) for n in described]
        if "up" not in states:
            status = "fail"  # no node answers: sessions and services have nowhere to run
        elif all(c["statusCode"] == "pass" for c in children.values()):
            status = "pass"
        else:
            status = "warn"
        counts = {state: states.count(state) for state in sorted(set(states))}
        drained = sum(n.get("draining") is True for n in described)
        if drained:
            counts["draining"] = drained  # of those up or not: the operator's choice
        return {"computeNodes": node(status, {"nodes": counts, **checked}, children)}

    async def _engine_and_image(self) -> dict[str, dict[str, Any]]:
        about, base_size = self._engine.about, self._engine.base_size
        if about is None or base_size is None:
            return {}
        checked = {"checkedAt": dotnet_timestamp(time.time())}
        try:
            engine = node("pass", {**await self._bounded(about()), **checked})
        except O16nError as exc:
            failed = node("fail", {"image": self._image, **checked})
            return {
                "dockerEngine": node("fail", {"error": exc.message, **checked}),
                "runtimeImage": failed,
            }
        try:
            size = await self._bounded(base_size())
            image = node("pass", {"image": self._image, "sizeBytes": size, **checked})
        except EngineTimeout as exc:
            image = node("fail", {"image": self._image, "error": exc.message, **checked})
        except O16nError:
            image = node(
                "fail",
                {
                    "image": self._image,
                    "error": "the runtime image is missing; build it with `make image`",
                    **checked,
                },
            )
        return {"dockerEngine": engine, "runtimeImage": image}

    async def _bounded(self, call: Awaitable[T]) -> T:
        """``call``'s answer, or ``EngineTimeout`` once it has taken ``engine_timeout``."""
        try:
            return await asyncio.wait_for(call, self._engine_timeout)
        except TimeoutError:
            raise EngineTimeout(
                f"the engine did not answer within {self._engine_timeout} s"
            ) from None


#: The app's health checks.
PROBE = web.AppKey("health_probe", HealthProbe)
