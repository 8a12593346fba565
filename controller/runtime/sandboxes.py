"""Sandboxes: where containers are launched and ended.

Sessions and services ask for a sandbox of a kind, run requests in it (``sandbox``), and
destroy it; they never see the engine's container runtime. The agent's listener is this
layer's: it listens at the endpoint the runtime chose (``handle.endpoint``) before the
container starts, and again when a restarted controller adopts it. At controller start,
``owned()`` lists what an earlier run left, the session manager adopts what it can, and
``reap`` removes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from controller.errors import AgentGone, NotFoundError, O16nError, RuntimeFailure
from controller.metrics.definitions import CONTAINER_DEATHS, CONTAINER_STARTS
from controller.runtime.agent_link import AgentLink, AgentListener, listener
from controller.runtime.containers import ContainerHandle, ContainerRuntime, ExitReport
from controller.runtime.environments import EnvironmentStore
from controller.runtime.sandbox import Sandbox
from controller.runtime.spec import ContainerSpec, Kind
from controller.settings import Settings

log = logging.getLogger(__name__)


#: Told the key of a container of ours that stopped by itself (``Sandboxes.watch``).
#: With a note to add to the reason: "" or that the engine was unreachable meanwhile.
ExitHandler = Callable[[str, str], Awaitable[None]]
OUTAGE_NOTE = "noticed when the Docker engine answered again after an outage or a restart"
RETRY_FIRST = 1.0  # seconds before a failed removal is tried again, doubling while it fails
RETRY_MAX = 60.0
#: seconds a cancelled launch waits for the engine to finish making its container
CREATE_WAIT = 30.0


@dataclass(frozen=True, slots=True)
class _Reach:
    """What a sandbox may do to its container (``sandbox.Engine``): the runtime's poll and
    signal, and the pool's removal, which keeps a failed one to try again."""

    runtime: ContainerRuntime
    sandboxes: Sandboxes

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        return await self.runtime.poll(handle)

    async def signal(self, handle: ContainerHandle, signal: str) -> None:
        await self.runtime.signal(handle, signal)

    async def remove(self, handle: ContainerHandle) -> None:
        await self.sandboxes._remove(handle)

    def ended(self, handle: ContainerHandle, reason: str) -> None:
        if handle.key in self.sandboxes._counted:
            self.sandboxes._causes[handle.key] = reason


class Sandboxes:
    def __init__(
        self,
        runtime: ContainerRuntime,
        environments: EnvironmentStore,
        settings: Settings,
        agent_dir: Path,
    ) -> None:
        self.runtime = runtime
        self.environments = environments
        self._reach = _Reach(runtime, self)
        self._settings = settings
        #: the agent bundle every container runs (``agent_bundle.stage``), whatever its image
        self.agent_dir = agent_dir
        #: the agents' listeners, by container key: from before start until removal
        self._listeners: dict[str, AgentListener] = {}
        #: keys of the containers in use: launched (from before their creation) or adopted
        self._live: set[str] = set()
        #: containers whose removal failed (the engine was down, say), tried again later
        self._unremoved: dict[str, ContainerHandle] = {}
        self._removal_failed = asyncio.Event()
        self._exit_handlers: list[ExitHandler] = []
        #: the containers this process launched or adopted, until counted as ended
        #: (``o16n_container_deaths_total``), with the kind they serve; and why they
        #: ended where a sandbox said so
        self._counted: dict[str, tuple[ContainerHandle, str]] = {}
        self._causes: dict[str, str] = {}
        #: keys of this instance's containers that another controller of the group took
        #: over with their sessions when this one was thought dead: never swept here
        self.held_elsewhere: Callable[[], Awaitable[set[str]]] = _nothing

    async def launch(
        self,
        kind: Kind,
        *,
        owner: str = "",
        ident: str = "",
        environment: str | None = None,
        place: str | None = None,
    ) -> Sandbox:
        """Create and start a hardened container on ``environment`` (a reference of the
        environment store; the base one if ``None``), at ``place`` if the runtime can
        (``ContainerRuntime.places``), and wait until its agent has dialled in."""
        try:
            sandbox = await self._launch(kind, owner, ident, environment, place)
        except Exception:  # not a cancellation: nothing failed then
            CONTAINER_STARTS.labels(kind, "failed").inc()
            raise
        CONTAINER_STARTS.labels(kind, "ok").inc()
        self._counted[sandbox.key] = (sandbox.handle, kind)
        return sandbox

    def serve(self, sandbox: Sandbox, kind: Kind) -> None:
        """A warm container taken for a session or a service: its end counts under that
        kind, where an out-of-memory kill of a session or a service is looked for."""
        counted = self._counted.get(sandbox.key)
        if counted is not None:
            self._counted[sandbox.key] = (counted[0], kind)
        self.runtime.serving(sandbox.key, kind)

    async def _launch(
        self, kind: Kind, owner: str, ident: str, environment: str | None, place: str | None
    ) -> Sandbox:
        spec = ContainerSpec.from_settings(
            self._settings,
            image=await self.environments.resolve(environment or self.environments.base),
            key=secrets.token_hex(6),
            kind=kind,
            agent_dir=self.agent_dir,
            owner=owner,
            ident=ident,
            place=place,
        )
        self._live.add(spec.key)  # before the engine has it: the sweep must not take it
        creating = asyncio.ensure_future(self.runtime.create(spec))
        creating.add_done_callback(_retrieved)  # a failure nobody awaits any more is no warning
        try:
            handle = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # cancelled (a shutdown, say) while the engine makes it: it goes on making it,
            # and no sweep may come after a shutdown, so wait for it and remove it here
            await self._remove_when_made(creating, spec.key)
            raise
        except BaseException:
            self._live.discard(spec.key)  # if the engine made it after all, the sweep removes it
            raise
        try:
            await self._listen(handle)
            await self.runtime.start(handle)
            link = await self._await_agent(handle, self._settings.agent_connect_timeout)
        except BaseException:
            await self._remove(handle)
            raise
        log.debug("sandbox launched", extra={"key": handle.key, "kind": kind})
        return Sandbox(handle, link, self._reach)

    async def _remove_when_made(self, creating: asyncio.Future[ContainerHandle], key: str) -> None:
        """Remove the container a cancelled launch was creating, once the engine has made
        it (waiting at most ``CREATE_WAIT`` seconds; what comes later, the sweep takes)."""
        try:
            async with asyncio.timeout(CREATE_WAIT):
                handle = await asyncio.shield(creating)
        except BaseException:  # it failed, or took too long, or we are cancelled again
            self._live.discard(key)
            return
        await self._remove(handle)

    async def adopt(self, handle: ContainerHandle, timeout: float) -> Sandbox:
        """Re-link with the agent of a container left by an earlier controller."""
        self._live.add(handle.key)
        await self._listen(handle)
        link = await self._await_agent(handle, timeout)
        self._counted[handle.key] = (handle, handle.kind)
        return Sandbox(handle, link, self._reach)

    async def reconnect(self, handle: ContainerHandle, timeout: float) -> Sandbox:
        """Wait longer for the agent of a container ``adopt`` listens for already."""
        link = await self._await_agent(handle, timeout)
        self._counted[handle.key] = (handle, handle.kind)
        return Sandbox(handle, link, self._reach)

    async def destroy(self, sandbox: Sandbox | ContainerHandle) -> None:
        if isinstance(sandbox, Sandbox):
            await sandbox.remove()
        else:
            await self._remove(sandbox)

    async def _remove(self, handle: ContainerHandle) -> None:
        """Remove a container; when the engine fails, keep it to try again later."""
        self._count_end(handle.key, self._causes.get(handle.key, "removed"))
        await self._drop_listener(handle.key)
        try:
            await self.runtime.remove(handle)
        except O16nError as exc:
            log.warning(
                "container removal failed; it will be tried again",
                extra={"key": handle.key, "error": exc.message},
            )
            self._unremoved[handle.key] = handle
            self._removal_failed.set()
        else:
            self._unremoved.pop(handle.key, None)
        finally:
            self._live.discard(handle.key)

    async def keep_clean(self, interval: float) -> None:
        """Run forever (owned by the task supervisor): retry failed removals, backing off
        while they fail, and every ``interval`` seconds sweep what no sandbox uses."""
        delay = RETRY_FIRST
        swept = time.monotonic()
        while True:
            if self._unremoved:
                await asyncio.sleep(delay)
            else:
                self._removal_failed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(swept + interval - time.monotonic(), 0)):
                        await self._removal_failed.wait()
                        continue  # a removal just failed: try it again after ``delay``
            try:
                if self._unremoved:
                    for handle in list(self._unremoved.values()):
                        await self._remove(handle)
                    delay = min(delay * 2, RETRY_MAX) if self._unremoved else RETRY_FIRST
                if time.monotonic() - swept >= interval:
                    swept = time.monotonic()
                    await self.sweep()
            except Exception:  # the engine or the disk failed: try again at the next round
                log.exception("sweep failed")

    async def sweep(self) -> int:
        """Remove this instance's containers that no sandbox uses (one whose creation the
        engine finished after we gave up on it, say) and what the engine keeps on this
        host for containers that are gone; returns how many containers."""
        removed = 0
        elsewhere = await self.held_elsewhere()
        for handle in await self.runtime.list_owned():
            if handle.key in elsewhere:
                continue
            if handle.key not in self._live and handle.key not in self._unremoved:
                log.info("removing a container no sandbox uses", extra={"key": handle.key})
                await self._remove(handle)
                removed += 1
        await self.runtime.sweep(
            lambda key: (
                key in self._live
                or key in self._unremoved
                or key in self._listeners
                or key in elsewhere
            )
        )
        return removed

    def on_exit(self, handler: ExitHandler) -> None:
        """Have ``handler`` told of every container in use that stops by itself."""
        self._exit_handlers.append(handler)

    async def watch(self) -> None:
        """Run forever (owned by the task supervisor): follow the engine's events and tell
        the handlers, each exit in a task of its own, which containers in use stopped."""
        tasks: set[asyncio.Task[None]] = set()
        try:
            async with contextlib.aclosing(self.runtime.exits()) as exits:
                async for key, after_outage in exits:
                    if key in self._live:
                        note = f" ({OUTAGE_NOTE})" if after_outage else ""
                        task = asyncio.create_task(self._exited(key, note), name=f"exit:{key}")
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _exited(self, key: str, note: str) -> None:
        counted = self._counted.get(key)
        if counted is not None:
            try:
                report = await self.runtime.poll(counted[0])
            except O16nError:
                report = None
            self._count_end(key, report.cause if report is not None else "exited")
        for handler in list(self._exit_handlers):
            try:
                await handler(key, note)
            except Exception:  # one handler's failure must not hide the exit from the rest
                log.exception("exit handler failed", extra={"key": key})

    def _count_end(self, key: str, reason: str) -> None:
        """Count a container's end once, if this process launched or adopted it."""
        counted = self._counted.pop(key, None)
        self._causes.pop(key, None)
        if counted is not None:
            CONTAINER_DEATHS.labels(counted[1], reason).inc()

    async def owned(self) -> list[ContainerHandle]:
        return await self.runtime.list_owned()

    async def reap(self, handles: list[ContainerHandle]) -> None:
        for handle in handles:
            log.info(
                "removing container left by an earlier run",
                extra={
                    "key": handle.key,
                    "kind": handle.kind,
                    "container": handle.engine_id[:12],
                },
            )
            await self._remove(handle)

    async def _await_agent(self, handle: ContainerHandle, timeout: float) -> AgentLink:
        """Wait for the agent, checking now and then that its container still runs."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                return await self._connect(handle, min(max(remaining, 0.01), 1.0))
            except AgentGone:
                report = await self.runtime.poll(handle)
                if report is not None:
                    raise RuntimeFailure(
                        f"the container stopped before its agent connected: {report.describe()}"
                    ) from None
                if time.monotonic() >= deadline:
                    raise

    async def _connect(self, handle: ContainerHandle, timeout: float) -> AgentLink:
        """The link to the container's agent, waiting up to ``timeout`` for it to dial in."""
        found = self._listeners.get(handle.key)
        if found is None:
            raise NotFoundError(f"no listener for container {handle.key}")
        return await found.wait_link(timeout)

    async def _listen(self, handle: ContainerHandle) -> None:
        """Listen at ``handle.endpoint`` for the container's agent (again, after a restart)."""
        found = self._listeners.get(handle.key)
        if found is None:
            found = listener(
                handle.endpoint,
                int(self._settings.agent_reply_max_bytes),
                int(self._settings.agent_blob_max_bytes),
            )
            self._listeners[handle.key] = found
            try:
                await found.start()
            except BaseException:
                await self._drop_listener(handle.key)
                raise

    async def _drop_listener(self, key: str) -> None:
        found = self._listeners.pop(key, None)
        if found is not None:
            await found.close()

    async def close(self) -> None:
        """Stop listening for every agent (containers keep running)."""
        for key in list(self._listeners):
            await self._drop_listener(key)


#: The app's sandboxes.
SANDBOXES = web.AppKey("sandboxes", Sandboxes)


async def _nothing() -> set[str]:
    return set()


def _retrieved(future: asyncio.Future[ContainerHandle]) -> None:
    if not future.cancelled():
        future.exception()
