"""Warm containers of one service version: where a consume request gets one.

Containers are restored from the service's environment and workspace once, then reused for
request after request (each request runs in a fresh namespace inside). The pool keeps
``initial`` containers warm, grows on demand up to ``maximum``, and removes extra
containers that stayed idle. When every container is busy, requests wait in a bounded
queue; when the queue is full, or the wait too long, the answer is 503 with Retry-After.
Nothing here touches SQLite or the engine unless the pool must grow or shrink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from controller.errors import O16nError, ServiceUnavailableError
from controller.runtime.sandbox import Sandbox
from controller.timing import now, record

log = logging.getLogger(__name__)

START_RETRY_FIRST = 1.0  # seconds without starts after one failed, doubling while they fail
START_RETRY_MAX = 60.0

Launch = Callable[[bool], Awaitable[Sandbox]]  # urgent: a request is waiting for it
Destroy = Callable[[Sandbox], Coroutine[Any, Any, None]]
Spawn = Callable[[str, Coroutine[Any, Any, Any]], Any]


class QueueWaitExpired(Exception):
    """A queued request waited ``queue_wait`` seconds without a container."""


def _expire(waiter: asyncio.Future[Sandbox]) -> None:
    if not waiter.done():
        waiter.set_exception(QueueWaitExpired())


def _handed(waiter: asyncio.Future[Sandbox]) -> bool:
    """Whether a container was handed to ``waiter``."""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


class ServicePool:
    def __init__(
        self,
        label: str,
        launch: Launch,
        destroy: Destroy,
        spawn: Spawn,
        *,
        initial: int,
        maximum: int,
        queue_max: int,
        queue_wait: float,
        idle_timeout: float,
    ) -> None:
        self.label = label
        self._launch = launch
        self._destroy = destroy
        self._spawn = spawn
        self.initial = initial
        self.maximum = maximum
        self._queue_max = queue_max
        self._queue_wait = queue_wait
        self._idle_timeout = idle_timeout
        self._idle: list[Sandbox] = []
        self._last_used: dict[Sandbox, float] = {}
        self._busy: set[Sandbox] = set()
        self._starting = 0
        self._waiters: deque[asyncio.Future[Sandbox]] = deque()
        #: containers started for a waiting request: its wait was a start, not the queue
        self._fresh: weakref.WeakSet[Sandbox] = weakref.WeakSet()
        self._closed = False
        self.last_error = ""
        self._retry_delay = 0.0
        self._retry_at = 0.0  # monotonic time before which no container starts
        self._retry_pending = False
        self.served = 0  # requests answered (for the operator; kept in memory only)
        self.rejected = 0  # requests turned away with 503 (queue full or waited too long)

    # --- numbers for status ---------------------------------------------------------------

    @property
    def ready(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return len(self._busy)

    @property
    def size(self) -> int:
        return len(self._idle) + len(self._busy)

    def by_place(self) -> dict[str, tuple[int, int]]:
        """Ready and busy containers by where they run (``ContainerHandle.place``: a
        compute node's name, "" for the local engine)."""
        counts: dict[str, tuple[int, int]] = {}
        for sandbox in self._idle:
            ready, busy = counts.get(sandbox.handle.place, (0, 0))
            counts[sandbox.handle.place] = (ready + 1, busy)
        for sandbox in self._busy:
            ready, busy = counts.get(sandbox.handle.place, (0, 0))
            counts[sandbox.handle.place] = (ready, busy + 1)
        return counts

    @property
    def starting(self) -> int:
        return self._starting

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def status(self) -> str:
        """ML Server's pool status: ``Success`` (ready), ``Pending`` (starting), ``NotFound``."""
        if self.size:
            return "Success"
        return "Pending" if self._starting else "NotFound"

    # --- the consume path -----------------------------------------------------------------

    async def acquire(self) -> Sandbox:
        """An idle warm container, waiting in the bounded queue when all are busy.

        Its time is the request's ``acquire`` phase, or ``queue`` when it waited for a
        container another request gave back (``controller.timing``)."""
        started = now()
        if self._closed:
            raise ServiceUnavailableError("the service is being changed or removed", retry_after=1)
        while self._idle:
            sandbox = self._idle.pop()
            if not sandbox.link.closed:
                self._busy.add(sandbox)
                record("acquire", started)
                return sandbox
            self._retire(sandbox)
        self._grow(demand=1)
        wait = self._retry_at - time.monotonic()
        if wait > 0 and not self.size and not self._starting:
            self.rejected += 1
            raise ServiceUnavailableError(
                f"{self.label} has no container: {self.last_error}; "
                f"the next start is in {wait:.0f} s",
                retry_after=math.ceil(wait),
            )
        if len(self._waiters) >= self._queue_max:
            self.rejected += 1
            raise ServiceUnavailableError(
                f"all {self.size} containers of {self.label} are busy and "
                f"{len(self._waiters)} requests are waiting; try again shortly",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Sandbox] = loop.create_future()
        self._waiters.append(waiter)
        # A plain timer on the waiter, not asyncio.wait: no extra future, set or callback
        # for every request that queues (at concurrency 16 most of them do).
        timer = loop.call_later(self._queue_wait, _expire, waiter)
        try:
            sandbox = await waiter
        except QueueWaitExpired:
            self.rejected += 1
            raise ServiceUnavailableError(
                f"no container of {self.label} became free within {self._queue_wait:g} s"
                + (f" (last start failure: {self.last_error})" if self.last_error else ""),
                retry_after=1,
            ) from None
        except BaseException:  # cancelled: a container handed over meanwhile goes back
            if _handed(waiter):
                self.release(waiter.result())
            raise
        finally:
            timer.cancel()
            handed = _handed(waiter)
            if not handed:  # expired or cancelled: it no longer counts as queued
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            record("acquire" if handed and waiter.result() in self._fresh else "queue", started)
        return sandbox

    def release(self, sandbox: Sandbox, healthy: bool = True) -> None:
        """Give a container back after a request; an unhealthy one is replaced."""
        self._busy.discard(sandbox)
        self.served += 1
        if self._closed or not healthy or sandbox.link.closed:
            self._retire(sandbox)
            self._grow()
            return
        if self.size >= self.maximum and not self._waiters:  # the pool was made smaller
            self._retire(sandbox)
            return
        self._hand_over(sandbox)

    def _hand_over(self, sandbox: Sandbox, fresh: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._busy.add(sandbox)
                if fresh:
                    self._fresh.add(sandbox)
                else:
                    self._fresh.discard(sandbox)
                waiter.set_result(sandbox)
                return
        self._last_used[sandbox] = time.monotonic()
        self._idle.append(sandbox)

    # --- growing and shrinking ------------------------------------------------------------

    def _grow(self, demand: int = 0) -> None:
        """Start as many containers as waiting requests (plus ``demand``) need and
        ``initial`` asks for, never more than ``maximum`` in all.

        Only the containers a request waits for (or, in an empty pool, the first one, which
        the next request will wait for) are urgent; the rest of the initial fill is not, so
        it need not take the pre-started containers that the next publish wants.

        After a failed start nothing starts until the back-off has passed; then the pool
        grows again by itself."""
        if time.monotonic() < self._retry_at:
            self._retry_later()
            return
        total = self.size + self._starting
        urgent = max(demand + len(self._waiters) - self._starting, 0)
        need = max(self.initial - total, urgent)
        if total == 0:
            urgent = max(urgent, 1)
        for i in range(min(need, self.maximum - total)):
            self._starting += 1
            self._spawn(f"pool-start:{self.label}", self._start_one(urgent=i < urgent))

    async def _start_one(self, urgent: bool) -> None:
        try:
            sandbox = await self._launch(urgent)
        except O16nError as exc:
            self.last_error = exc.message
            log.warning(
                "service container failed to start",
                extra={"service": self.label, "error": exc.message},
            )
            self._starting -= 1
            self._retry_delay = min(max(self._retry_delay * 2, START_RETRY_FIRST), START_RETRY_MAX)
            self._retry_at = time.monotonic() + self._retry_delay
            if not self.size and not self._starting:
                self._fail_waiters(exc)
            self._retry_later()
            return
        except BaseException:
            self._starting -= 1
            raise
        self._starting -= 1
        self.last_error = ""
        self._retry_delay = self._retry_at = 0.0
        if self._closed or (self.size >= self.maximum and not self._waiters):
            await self._destroy(sandbox)
        else:
            self._hand_over(sandbox, fresh=True)

    def _retry_later(self) -> None:
        """Grow again once the back-off has passed (one timer at a time)."""
        if self._retry_pending or self._closed:
            return
        self._retry_pending = True

        async def later() -> None:
            try:
                await asyncio.sleep(max(self._retry_at - time.monotonic(), 0.0))
            finally:
                self._retry_pending = False
            if not self._closed:
                self._grow()

        try:
            self._spawn(f"pool-retry:{self.label}", later())
        except RuntimeError:  # the controller is shutting down
            self._retry_pending = False

    def _fail_waiters(self, exc: O16nError) -> None:
        error = ServiceUnavailableError(
            f"{self.label} has no container: {exc.message}", retry_after=5
        )
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def on_exit(self, key: str) -> None:
        """A container stopped by itself: an idle one of ours is replaced (a busy one is
        by its request, which sees its agent gone)."""
        for sandbox in list(self._idle):
            if sandbox.key == key:
                self._idle.remove(sandbox)
                self._retire(sandbox)
                self.warm()

    def warm(self) -> None:
        """Start containers until ``initial`` are running or starting."""
        if not self._closed:
            self._grow()

    async def shrink(self) -> None:
        """Remove idle containers above ``initial`` that nobody used for a while."""
        now = time.monotonic()
        while len(self._idle) + len(self._busy) > self.initial and self._idle:
            oldest = min(self._idle, key=lambda s: self._last_used.get(s, 0.0))
            if now - self._last_used.get(oldest, 0.0) < self._idle_timeout:
                break
            self._idle.remove(oldest)
            await self._retire_now(oldest)

    async def resize(self, initial: int, maximum: int) -> None:
        self.initial, self.maximum = initial, maximum
        while self.size > maximum and self._idle:
            await self._retire_now(self._idle.pop(0))
        self.warm()

    async def drain(self) -> None:
        """Remove every idle container now; the pool stays usable and starts anew on demand."""
        while self._idle:
            await self._retire_now(self._idle.pop())

    async def close(self) -> None:
        """Remove every container; busy ones go when their request ends."""
        self._closed = True
        self._fail_waiters(O16nError("the service was changed or removed"))
        while self._idle:
            await self._retire_now(self._idle.pop())

    def _retire(self, sandbox: Sandbox) -> None:
        self._last_used.pop(sandbox, None)
        self._spawn(f"pool-retire:{self.label}", self._destroy(sandbox))

    async def _retire_now(self, sandbox: Sandbox) -> None:
        self._last_used.pop(sandbox, None)
        await self._destroy(sandbox)
