"""Pre-started generic runtime containers, so ``POST /sessions`` (and publishing) need not
wait for one.

A warm container serves one session only and is removed when that session ends; the
pool refills in the background, one container at a time, backing off when the engine
fails. With several compute nodes the pool keeps ``size`` ready on each
(``ContainerRuntime.places``), and ``take`` hands out one from the best place that has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import web

from controller.errors import O16nError
from controller.runtime.sandbox import Sandbox
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.spec import Kind

log = logging.getLogger(__name__)


RECHECK = 5.0  # seconds between two looks at the places, when nothing asked for a refill

Prepare = Callable[[Sandbox], Awaitable[None]]
#: what a warm container of each pool becomes when taken (the kind its end counts under)
SERVES: dict[str, Kind] = {"sessions": "session", "services": "service"}


class WarmPool:
    """Ready containers of the base environment. ``prepare`` runs on each before it is ready
    (the services' pool preloads heavy modules there)."""

    def __init__(
        self, sandboxes: Sandboxes, size: int, purpose: str, prepare: Prepare | None = None
    ) -> None:
        self._sandboxes = sandboxes
        self.size = size
        self.purpose = purpose  # the containers' o16n.id label: "sessions" or "services"
        self._prepare = prepare
        self._ready: deque[Sandbox] = deque()
        self._wanted = asyncio.Event()
        self._wanted.set()

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def target(self) -> int:
        """How many it keeps ready: ``size`` in each place containers may go now."""
        return self.size * len(self._sandboxes.runtime.places())

    async def take(self) -> Sandbox | None:
        """A warm sandbox whose agent is still connected, from the best place that has one
        (the least-loaded compute node), or ``None``; asks for a refill. Places that take
        no new containers now (a drained or lost node) are passed over: theirs wait."""
        self._wanted.set()
        rank = {place: i for i, place in enumerate(self._sandboxes.runtime.places())}
        while candidates := [s for s in self._ready if s.handle.place in rank]:
            sandbox = min(candidates, key=lambda s: rank[s.handle.place])
            self._ready.remove(sandbox)
            if not sandbox.link.closed:
                if self.purpose in SERVES:
                    self._sandboxes.serve(sandbox, SERVES[self.purpose])
                return sandbox
            await self._sandboxes.destroy(sandbox)
        return None

    async def on_exit(self, key: str, note: str = "") -> None:
        """A container stopped by itself: if one of ours, drop it and start another."""
        for sandbox in list(self._ready):
            if sandbox.key == key:
                self._ready.remove(sandbox)
                self._wanted.set()
                await self._sandboxes.destroy(sandbox)

    async def keep_full(self) -> None:
        """Run forever (owned by the task supervisor): top the pool up whenever asked, and
        every ``RECHECK`` seconds (a compute node that came up gets its share)."""
        backoff = 1.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK):
                    await self._wanted.wait()
            self._wanted.clear()
            while (place := self._short()) is not None:
                try:
                    sandbox = await self._launch(place)
                    backoff = 1.0
                except Exception as exc:  # the engine refused, the listener could not start, ...
                    error = exc.message if isinstance(exc, O16nError) else repr(exc)
                    log.warning("warm pool could not start a container", extra={"error": error})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
                    continue
                self._ready.append(sandbox)
                if sandbox.handle.place != place:
                    break  # the place went away meanwhile: look again at the next round

    def _short(self) -> str | None:
        """A place with fewer than ``size`` ready containers, if any."""
        for place in self._sandboxes.runtime.places():
            if sum(s.handle.place == place for s in self._ready) < self.size:
                return place
        return None

    async def _launch(self, place: str) -> Sandbox:
        sandbox = await self._sandboxes.launch("warm", ident=self.purpose, place=place)
        if self._prepare is not None:
            try:
                await self._prepare(sandbox)
            except BaseException:
                await self._sandboxes.destroy(sandbox)
                raise
        return sandbox

    async def close(self) -> None:
        while self._ready:
            await self._sandboxes.destroy(self._ready.popleft())


#: The app's warm pools (the sessions' and the services'), for ``/metrics``.
WARM_POOLS = web.AppKey[list[WarmPool]]("warm_pools")
