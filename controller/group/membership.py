"""This controller's membership of its group, and the leases of group-wide jobs.

Every controller sharing the database has a row (``store/group.py``) with a random id
made at each start, so a restarted controller is a new member and the row of one killed
is left to expire. ``run`` heartbeats the row every third of ``O16N_LEASE_SECONDS`` and, in
the same beat, takes or renews the leases of the jobs this controller wants to run. A job
that acts on rows every controller shares (purges, batches) runs only while ``holds`` its
lease, or under ``run_as_leader``, which cancels it when the lease is lost. A controller
alone holds every lease from its first beat.

A lease counts as ours for two thirds of its term after the renewal was sent, not the
whole term: the last third is the margin for a job to stop, and for clocks that disagree,
before another controller may take it (never both at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from controller.settings import Settings
from controller.store.group import ControllerRecord, GroupRepo, LeaseRecord

log = logging.getLogger(__name__)

#: The share of a lease's term after its renewal during which a controller acts on it.
HOLD_SHARE = 2 / 3

#: Seconds a killed controller's row stays listed (``/admin/controllers``) after it died.
DEAD_ROWS_KEPT = 86400.0

#: The lease of the hourly purges (tokens, audit trail, dead sessions' rows).
PURGES = "purges"
#: The lease of running batches (every unfinished one, whichever controller took it).
BATCHES = "batches"


def internal_url(settings: Settings) -> str:
    """Where the others reach this controller: ``O16N_INTERNAL_URL``, else the bound
    address and port (this machine's name if that address is a wildcard one)."""
    if settings.internal_url is not None:
        return settings.internal_url
    host = settings.host
    if _unspecified(host):  # a wildcard address: nobody dials that
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _unspecified(host: str) -> bool:
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a name
        return False


@dataclass(eq=False)
class _Lease:
    name: str
    #: ``time.monotonic()`` until which it is ours; 0: not ours
    until: float = 0.0
    #: set at each beat that renewed it or failed to (wakes ``run_as_leader``)
    beat: asyncio.Event = field(default_factory=asyncio.Event)

    def held(self) -> bool:
        return self.until > time.monotonic()


class Membership:
    def __init__(self, repo: GroupRepo, name: str, url: str, lease_seconds: float) -> None:
        self._repo = repo
        self.id = secrets.token_hex(8)
        self.name = name
        self.internal_url = url
        self.lease_seconds = lease_seconds
        self.started_at = time.time()
        self._leases: dict[str, _Lease] = {}
        self._wake = asyncio.Event()
        self._left = False

    # --- the row -------------------------------------------------------------------------

    async def join(self) -> None:
        """At start: add this controller's row."""
        now = time.time()
        await self._repo.register(self._record(now))
        log.info(
            "joined the group",
            extra={"controller": self.id, "internal_url": self.internal_url},
        )

    async def leave(self) -> None:
        """At a clean stop (the jobs stopped first): drop the row and give every lease up.
        A heartbeat still running (a start that failed half way stops no task) no longer
        registers again nor takes a lease."""
        self._left = True
        for lease in self._leases.values():
            lease.until = 0.0
        try:
            await self._repo.forget(self.id)
        except Exception:  # its row and leases expire on their own
            log.exception("leaving the group failed")

    async def run(self) -> None:
        """Run forever (owned by the task supervisor): one beat now and every third of a
        lease, or at once when a new lease is wanted."""
        while True:
            try:
                async with asyncio.timeout(self.lease_seconds / 3):
                    await self._beat()
            except Exception:  # the database: the leases lapse here before they do there
                log.exception("group heartbeat failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_seconds / 3):
                    await self._wake.wait()
            self._wake.clear()

    async def _beat(self) -> None:
        if self._left:
            return
        sent, now = time.monotonic(), time.time()
        if not await self._repo.heartbeat(self.id, now, self.lease_seconds):
            log.warning("this controller's row was gone; registering again")
            await self._repo.register(self._record(now))
        for lease in list(self._leases.values()):
            ours = await self._repo.try_lease(lease.name, self.id, now, self.lease_seconds)
            self._renewed(lease, sent if ours else None)

    def _renewed(self, lease: _Lease, sent: float | None) -> None:
        was = lease.held()
        lease.until = 0.0 if sent is None else sent + self.lease_seconds * HOLD_SHARE
        if lease.held() != was:
            log.info(
                "lease taken" if not was else "lease lost",
                extra={"lease": lease.name, "controller": self.id},
            )
        lease.beat.set()

    def _record(self, now: float) -> ControllerRecord:
        return ControllerRecord(
            id=self.id,
            name=self.name,
            internal_url=self.internal_url,
            started_at=self.started_at,
            heartbeat_at=now,
            expires_at=now + self.lease_seconds,
        )

    # --- leases --------------------------------------------------------------------------

    def want(self, job: str) -> None:
        """Take part in ``job``'s lease from the next beat on (soon: it is brought forward)."""
        if job not in self._leases:
            self._leases[job] = _Lease(job)
            self._wake.set()

    async def acquire(self, job: str) -> bool:
        """Want ``job`` and try its lease now, not at the next beat; whether it is ours."""
        self.want(job)
        if self._left:
            return False
        lease = self._leases[job]
        sent = time.monotonic()
        ours = await self._repo.try_lease(job, self.id, time.time(), self.lease_seconds)
        self._renewed(lease, sent if ours else None)
        return ours

    def holds(self, job: str) -> bool:
        """Whether this controller may run ``job`` now (it wants it from now on)."""
        self.want(job)
        return self._leases[job].held()

    def held(self) -> list[str]:
        """The leases this controller holds now."""
        return sorted(name for name, lease in self._leases.items() if lease.held())

    async def run_as_leader(self, job: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run forever: whenever this controller holds ``job``'s lease, run ``work()``, and
        cancel it (awaiting its end) as soon as the lease is no longer ours. ``work`` is
        meant to run until cancelled; if it ends anyway, it starts again at the next beat."""
        self.want(job)
        lease = self._leases[job]
        while True:
            while not lease.held():
                lease.beat.clear()
                await lease.beat.wait()
            task = asyncio.ensure_future(work())
            try:
                while not task.done() and lease.held():
                    # woken by each beat too: a renewal that failed stops the work at once,
                    # not when the hold it had runs out
                    lease.beat.clear()
                    beat = asyncio.ensure_future(lease.beat.wait())
                    try:
                        await asyncio.wait(
                            [task, beat],
                            timeout=lease.until - time.monotonic(),
                            return_when=asyncio.FIRST_COMPLETED,
                        )
                    finally:
                        beat.cancel()
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.error("group-wide job failed", exc_info=task.exception(), extra={"job": job})
            if lease.held():  # it ended by itself: again at the next beat
                lease.beat.clear()
                await lease.beat.wait()

    # --- the group -----------------------------------------------------------------------

    async def members(self) -> list[ControllerRecord]:
        """The live controllers of the group, this one included."""
        return await self._repo.live(time.time())

    async def group(self) -> tuple[list[ControllerRecord], list[LeaseRecord]]:
        """Every controller's row (the dead ones' too) and the leases held now."""
        now = time.time()
        return await self._repo.controllers(), await self._repo.leases(now)

    async def purge(self) -> int:
        """Forget the rows of controllers killed more than a day ago (run with the hourly
        purges): ``/admin/controllers`` would list them for ever."""
        return await self._repo.purge(time.time() - DEAD_ROWS_KEPT)

    async def alone(self) -> bool:
        """Whether no other controller of the group is alive."""
        return all(member.id == self.id for member in await self.members())


#: The app's membership of its group.
MEMBERSHIP = web.AppKey("membership", Membership)
