"""Memory and CPU of containers, now, for the operator's lists.

Asking Docker is slow and blocking, so samples are taken only when asked for
(``?stats=true``), concurrently (at most ``CONCURRENCY`` at once, on the gateway's thread
pool), each within ``TIMEOUT`` seconds (a container that does not answer in time shows
``null``), and with ``one_shot`` (no second sample). The CPU share is computed from this
sample and the previous one this process took of the same container; the first time it is
``null`` and only the cumulative CPU seconds are known.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from controller.errors import O16nError
from controller.runtime.docker.gateway import DockerGateway

CONCURRENCY = 4  # of the gateway's 8 threads: the rest stay free for sessions and pools
TIMEOUT = 3.0
DF_MAX_AGE = 60.0
DF_TIMEOUT = 30.0


class StatsSampler:
    def __init__(self, gateway: DockerGateway) -> None:
        self._gateway = gateway
        self._previous: dict[str, tuple[float, int]] = {}  # container → (monotonic, cpu ns)
        self._df: tuple[float, dict[str, Any]] | None = None
        self._df_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(CONCURRENCY)  # shared: every caller's calls together

    async def engine_disk(self, max_age: float = DF_MAX_AGE) -> dict[str, Any]:
        """Bytes the engine uses for images, containers, volumes and build cache
        (``docker system df``: slow, so at most one at a time and reused for ``max_age``)."""
        async with self._df_lock:
            if self._df is None or time.monotonic() - self._df[0] > max_age:
                async with asyncio.timeout(DF_TIMEOUT):
                    raw = await self._gateway.system_df()
                self._df = (time.monotonic(), _df_summary(raw))
            return self._df[1]

    async def sample(self, container_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        async def one(container_id: str) -> dict[str, Any] | None:
            call = asyncio.ensure_future(self._ask(container_id))
            try:
                async with asyncio.timeout(TIMEOUT):
                    raw = await asyncio.shield(call)
            except TimeoutError:
                call.cancel()  # never asks if still waiting for a slot; else keeps it
                return None
            except O16nError:
                return None
            return self._shape(container_id, raw)

        results = await asyncio.gather(*(one(c) for c in container_ids))
        live = set(container_ids)
        for gone in [c for c in self._previous if c not in live]:
            del self._previous[gone]
        return dict(zip(container_ids, results, strict=True))

    async def _ask(self, container_id: str) -> dict[str, Any]:
        """One engine call in a slot, held until the engine answers: the call goes on in
        its thread when the caller stops waiting, so its slot is not free before."""
        async with self._slots:
            ask = asyncio.ensure_future(self._gateway.container_stats(container_id))
            try:
                return await asyncio.shield(ask)
            except asyncio.CancelledError:
                await asyncio.wait([ask])
                if not ask.cancelled():
                    ask.exception()  # given up on: its error is nobody's
                raise

    def _shape(self, container_id: str, raw: dict[str, Any]) -> dict[str, Any] | None:
        """Memory in bytes and CPU use from an untrusted-shape stats document."""
        try:
            memory = raw.get("memory_stats") or {}
            usage = int(memory.get("usage") or 0)
            inactive = (memory.get("stats") or {}).get("inactive_file") or 0
            cpu = (raw.get("cpu_stats") or {}).get("cpu_usage") or {}
            cpu_ns = int(cpu.get("total_usage") or 0)
        except (TypeError, ValueError, AttributeError):
            return None
        now = time.monotonic()
        percent = None
        previous = self._previous.get(container_id)
        if previous is not None and now > previous[0] and cpu_ns >= previous[1]:
            percent = round(100.0 * (cpu_ns - previous[1]) / ((now - previous[0]) * 1e9), 1)
        self._previous[container_id] = (now, cpu_ns)
        return {
            "memoryBytes": max(usage - int(inactive), 0),
            "memoryLimitBytes": int(memory.get("limit") or 0) or None,
            "cpuSeconds": round(cpu_ns / 1e9, 3),
            "cpuPercent": percent,
        }


def _df_summary(raw: dict[str, Any]) -> dict[str, Any]:
    def total(items: Any, key: str) -> int:
        return sum(int(i.get(key) or 0) for i in items or [] if isinstance(i, dict))

    return {
        "layersBytes": int(raw.get("LayersSize") or 0),
        "imagesBytes": total(raw.get("Images"), "Size"),
        "containersBytes": total(raw.get("Containers"), "SizeRw"),
        "volumesBytes": sum(
            int((v.get("UsageData") or {}).get("Size") or 0)
            for v in raw.get("Volumes") or []
            if isinstance(v, dict)
        ),
        "buildCacheBytes": total(raw.get("BuildCache"), "Size"),
    }
