"""The owner of every background task: spawned by name, cancelled and awaited at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from controller.timing import TIMING

log = logging.getLogger(__name__)


class TaskSupervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; its failure is logged, never lost. It keeps
        the request id of the request that started it, not its timing: a task that goes on
        beside (or after) the request would add phases that overlap the request's own."""
        if self._closing:
            coro.close()
            raise RuntimeError("the controller is shutting down")
        context = contextvars.copy_context()
        if context.get(TIMING) is not None:
            context.run(TIMING.set, None)
        task = asyncio.create_task(coro, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed",
                exc_info=task.exception(),
                extra={"task": task.get_name()},
            )

    async def close(self, grace: float = 0.0) -> None:
        """Give the tasks ``grace`` seconds to end by themselves, then cancel every one
        left and wait for it. A task that swallowed its cancellation (on Python 3.11
        ``asyncio.wait_for`` can) is cancelled again until it ends."""
        self._closing = True
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        while tasks:
            done, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in done:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
            for task in pending:
                log.warning(
                    "task ignored its cancellation; cancelling again",
                    extra={"task": task.get_name()},
                )
                task.cancel()
            tasks = list(pending)


#: The app's task supervisor.
TASKS = web.AppKey("tasks", TaskSupervisor)
