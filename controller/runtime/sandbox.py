"""A sandbox: one container, the link to its agent, and what happens to a request in it.

The pool (``sandboxes.Sandboxes``) launches and adopts sandboxes. A sandbox owns its run:
the time limit, the interrupt when it passes and the grace after it, why the container
ended when its agent went away, and its own removal; sessions, services and batches all go
through :meth:`Sandbox.run` and read one :class:`Outcome`. It reaches the engine only
through the :class:`Engine` it was given at launch: poll, signal and remove its container.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.errors import AgentGone, AgentProtocolError, O16nError
from controller.runtime.agent_link import AgentLink, AgentTimeout, Reply
from controller.runtime.containers import ContainerHandle, ExitReport
from controller.timing import now, record

log = logging.getLogger(__name__)

#: seconds the agent has to acknowledge an interrupt before the engine's SIGINT is sent
ACK_TIMEOUT = 2.0
#: seconds to wait for the engine's report of how a container ended, once its link broke
REPORT_WAIT = 5.0
#: the log line of an interrupt the agent did not acknowledge (tests look for it)
FALLBACK_LOG = "the agent did not acknowledge an interrupt; sending the engine's SIGINT"


class Engine(Protocol):
    """What a sandbox may ask of the engine, about its own container only."""

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        """``None`` while the container runs, else how it ended."""

    async def signal(self, handle: ContainerHandle, signal: str) -> None: ...

    async def remove(self, handle: ContainerHandle) -> None:
        """Kill and remove; idempotent."""

    def ended(self, handle: ContainerHandle, reason: str) -> None:
        """Why the container ended or is about to be removed (``ExitReport.cause``, or
        ``timeout``): counted at its removal instead of ``removed``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended. ``reply`` is the agent's answer, ``None`` when none came; then
    ``reason`` says why, and the sandbox may not be used again. ``timed_out``: the time
    limit passed and the code was interrupted; ``stuck``: it did not stop even then (the
    link is closed)."""

    reply: dict[str, Any] | None
    timed_out: bool = False
    stuck: bool = False
    reason: str = ""
    #: the container's compute node was lost: the request never finished anywhere, and
    #: may be run again on another container (a batch record is)
    lost: bool = False


@dataclass(eq=False)
class Sandbox:
    handle: ContainerHandle
    link: AgentLink
    engine: Engine
    #: interrupts the agent did not acknowledge, sent as the engine's SIGINT instead
    signalled: int = 0
    #: how the container ended, in one word (``ExitReport.cause``), once known
    cause: str = ""
    #: the interrupt under way: interrupts at once share it, and so its one fallback signal
    _interrupting: asyncio.Task[bool] | None = field(default=None, init=False, repr=False)

    @property
    def key(self) -> str:
        return self.handle.key

    async def call(self, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Reply:
        return await self.link.call(op, args, **kw)

    async def run(self, op: str, args: dict[str, Any], *, timeout: float, grace: float) -> Outcome:
        """Run a request that runs user code (``execute``, ``execution_result``, ``run``):
        after ``timeout`` seconds it is interrupted and gets ``grace`` seconds more. An
        error the agent reports (a bad request, an unknown execution) is raised."""
        timed_out = False

        async def on_timeout() -> None:
            nonlocal timed_out
            timed_out = True
            await self.interrupt()

        started = now()
        try:
            reply, _ = await self.link.call(
                op, args, timeout=timeout, on_timeout=on_timeout, grace=grace
            )
        except AgentTimeout:
            self.engine.ended(self.handle, "timeout")
            return Outcome(None, True, True, "it did not stop when interrupted")
        except (AgentGone, AgentProtocolError) as exc:
            reason = await self.end_reason(exc)
            return Outcome(None, timed_out, reason=reason, lost=self.cause == "lost")
        finally:
            record("exec", started)
        return Outcome(reply, timed_out)

    async def interrupt(self) -> bool:
        """``KeyboardInterrupt`` in the user code running now: a message to the agent, and
        the engine's SIGINT only when the agent does not acknowledge it within
        ``ACK_TIMEOUT`` seconds. ``False`` when no code ran (nothing was sent).

        Best effort, as any interrupt: an engine that fails the fallback signal (it is
        away, say) is logged, not raised, so that what interrupts goes on (a close removes
        the container, a time limit's grace runs out) rather than failing half-way.

        Interrupts at once (a cancel and the time limit, say) are one: one message, as the
        link sends, and so at most one engine signal, not a second one that would interrupt
        the code's own clean-up after the first."""
        if self._interrupting is None or self._interrupting.done():
            self._interrupting = asyncio.ensure_future(self._interrupt())
        return await asyncio.shield(self._interrupting)

    async def _interrupt(self) -> bool:
        answer = await self.link.interrupt(ACK_TIMEOUT)
        if answer == "silent":
            self.signalled += 1
            log.warning(FALLBACK_LOG, extra={"key": self.key})
            try:
                await self.engine.signal(self.handle, "SIGINT")
            except O16nError as exc:
                log.warning(
                    "the engine's SIGINT failed", extra={"key": self.key, "error": exc.message}
                )
        return answer != "idle"

    async def exit_report(self, wait: float = 0.0) -> ExitReport | None:
        """How the container ended, waiting up to ``wait`` seconds for it to end;
        ``None`` if it still runs."""
        deadline = time.monotonic() + wait
        while True:
            report = await self.engine.poll(self.handle)
            if report is not None or time.monotonic() >= deadline:
                return report
            await asyncio.sleep(0.1)

    async def end_reason(self, exc: O16nError, wait: float = REPORT_WAIT) -> str:
        """Why the agent failed with ``exc``: how its container ended where the engine says
        so, else the failure itself. The link breaks a moment before the engine reports
        the exit, so for a broken link this waits up to ``wait`` seconds for the report."""
        try:
            report = await self.exit_report(wait if isinstance(exc, AgentGone) else 0.0)
        except O16nError:
            report = None
        if report is not None:
            self.cause = report.cause
            self.engine.ended(self.handle, report.cause)
            return report.describe()
        if isinstance(exc, AgentTimeout):
            return "its agent stopped answering"
        return exc.message

    async def remove(self) -> None:
        """Close the link and remove the container (the pool retries a failed removal)."""
        try:
            await self.link.aclose()
        finally:
            await self.engine.remove(self.handle)
