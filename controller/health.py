"""Health checks behind ``GET /status``: the engine and its runtime environment, when the
engine reports them (slow: cached for a couple of seconds, so a load balancer polling
``/status`` does not turn into a stream of engine calls) and free disk (one ``statvfs``:
checked on every request, so a disk that just filled up shows at once). (The database is
pinged on every request too.)"""

from __future__ import annotations

import asyncio
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.errors import O16nError
from controller.runtime.engines import Engine

CACHE_SECONDS = 2.0
#: Seconds the disk check may take before it counts as failed.
DISK_TIMEOUT = 0.5


def node(
    status: str, details: dict[str, Any] | None = None, components: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One node of the 9.3 ``StatusResponse`` tree."""
    return {"statusCode": status, "components": components or {}, "details": details or {}}


def disk(path: Path, fail_below: int, warn_below: int) -> dict[str, Any]:
    usage = shutil.disk_usage(path)
    status = "fail" if usage.free < fail_below else "warn" if usage.free < warn_below else "pass"
    details = {"path": str(path.resolve()), "freeBytes": usage.free, "totalBytes": usage.total}
    return node(status, details)


class HealthProbe:
    """Checks of the engine and its runtime environment (cached; those the engine has hooks
    for) and of the data directory's disk (fresh): ``fail`` below ``disk_fail`` free bytes,
    ``warn`` below ``disk_warn``."""

    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        disk_fail: int = 256 * 1024**2,
        disk_warn: int = 2 * 1024**3,
    ) -> None:
        self._engine = engine
        self._image = engine.environments.base
        self._data_dir = data_dir
        self._disk_fail = disk_fail
        self._disk_warn = disk_warn
        # a thread of its own: the shared default executor may be busy with long file work
        # (tarballs being written), and ``/status`` must answer within a second regardless
        self._disk_reader = ThreadPoolExecutor(1, thread_name_prefix="disk-check")
        self._at = 0.0
        self._result: dict[str, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, dict[str, Any]]:
        """``{"dockerEngine", "runtimeImage", "disk"}`` status nodes (the first two if the
        engine has the hooks for them, at most a few seconds old)."""
        async with self._lock:
            if self._result is None or time.monotonic() - self._at > CACHE_SECONDS:
                self._result = await self._engine_and_image()
                self._at = time.monotonic()
            cached = self._result
        return {**cached, "disk": await self._disk()}

    async def _disk(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        check = loop.run_in_executor(
            self._disk_reader, disk, self._data_dir, self._disk_fail, self._disk_warn
        )
        try:
            return await asyncio.wait_for(check, DISK_TIMEOUT)
        except TimeoutError:
            error = f"the disk did not answer within {DISK_TIMEOUT} s"
            return node("fail", {"path": str(self._data_dir), "error": error})

    def close(self) -> None:
        self._disk_reader.shutdown(wait=False, cancel_futures=True)

    async def _engine_and_image(self) -> dict[str, dict[str, Any]]:
        about, base_size = self._engine.about, self._engine.base_size
        if about is None or base_size is None:
            return {}
        try:
            engine = node("pass", await about())
        except O16nError as exc:
            failed = node("fail", {"image": self._image})
            return {"dockerEngine": node("fail", {"error": exc.message}), "runtimeImage": failed}
        try:
            size = await base_size()
            image = node("pass", {"image": self._image, "sizeBytes": size})
        except O16nError:
            image = node(
                "fail",
                {
                    "image": self._image,
                    "error": "the runtime image is missing; build it with `make image`",
                },
            )
        return {"dockerEngine": engine, "runtimeImage": image}


#: The app's cached health checks.
PROBE = web.AppKey("health_probe", HealthProbe)
