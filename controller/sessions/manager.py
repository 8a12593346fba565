"""Where sessions start, run code, die, come back after a restart and are reaped.

Every session owns one sandbox (container + agent link) and a lock: one agent call at a
time, and a caller waits at most ``session_busy_wait`` seconds for a running execution
before getting 409. A session whose container dies (OOM, crash, ``os._exit``) is marked
dead with the reason; later calls get 410. Sessions are private: another user's id is 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import string
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from controller import timing
from controller.auth.roles import Identity
from controller.errors import (
    AgentGone,
    AgentProtocolError,
    ConflictError,
    GoneError,
    InsufficientStorage,
    NotFoundError,
    O16nError,
    ServiceUnavailableError,
    StoreBusy,
    TooManyRequestsError,
)
from controller.runtime.agent_link import (
    AGENT_TIMEOUT,
    RUNTIME,
    AgentTimeout,
    BlobSink,
    BlobSource,
    Reply,
)
from controller.runtime.blobs import open_source
from controller.runtime.containers import ContainerHandle
from controller.runtime.sandbox import Sandbox
from controller.runtime.sandboxes import Sandboxes
from controller.runtime.warm_pool import WarmPool
from controller.sessions.history import ExecutionLog
from controller.sessions.models import (
    CollectedReply,
    ExecuteReply,
    ExecuteRequest,
    changed_files,
    check_session_id,
    failed_result,
)
from controller.settings import Settings
from controller.store.sessions import SessionRecord, SessionsRepo
from controller.tasks import TaskSupervisor

log = logging.getLogger(__name__)

#: A snapshot's environment (a reference of the environment store) and the path of its
#: workspace tarball, for a session to start from (the tarball streams from that file to the
#: agent).
SnapshotSource = Callable[[], Awaitable[tuple[str, Path]]]
Spawn = Callable[[str, Coroutine[Any, Any, Any]], Any]
DEAD_RECORDS_KEPT = 86400.0
CLOSED_BY_ADMIN = "closed by an administrator"
CLOSED_BY_FORCE = "closed by force (DELETE /sessions/{id}/force)"
#: seconds a plain close waits for interrupted code to stop before it removes the container
CLOSE_GRACE = 10.0
#: executions of a session whose history may wait to be written: beyond, an ``execute``
#: waits for the write first (each session's agent keeps the results not yet written, for
#: a controller that restarts meanwhile, and at most ``UNRECORDED_MAX``)
WRITE_BEHIND_MAX = 256
UNRECORDED_MAX = 1000
#: seconds a shutdown waits for the containers of closed sessions to go (the next start
#: removes what is left: no record names them)
SHUTDOWN_WAIT = 5.0


@dataclass(eq=False)
class Session:
    id: str
    name: str
    owner_id: int
    owner_name: str
    sandbox: Sandbox | None
    created_at: float
    last_used: float = field(default_factory=time.time)
    console: str = ""
    history_length: int = 0
    dead_reason: str | None = None
    executing: bool = False
    cancel_requested: bool = False
    snapshot_id: str | None = None  # the snapshot it started from (not kept across restarts)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the container of an adopted session whose agent has not dialled in yet
    reconnecting: ContainerHandle | None = None
    #: its owner closes it: no call starts any more, and its record goes
    closing: bool = False

    @property
    def alive(self) -> bool:
        return self.dead_reason is None

    def to_json(self) -> dict[str, Any]:
        return listing(self.id, self.name, self.owner_name)


def listing(session_id: str, name: str, owner: str) -> dict[str, Any]:
    """A session as ``GET /sessions`` lists it, wherever in the group it is held."""
    return {"id": session_id, "name": name, "owner": owner, "runtimeType": RUNTIME}


def execute_failure(message: str) -> dict[str, Any]:
    return failed_result(message, [])


class SessionManager:
    def __init__(
        self, settings: Settings, repo: SessionsRepo, sandboxes: Sandboxes, pool: WarmPool
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._sandboxes = sandboxes
        self._pool = pool
        #: this controller in its group: the instance its session rows name
        self._me = settings.instance
        #: sessions of a dead controller being taken over (``take_over``): 503 meanwhile
        self._arriving: set[str] = set()
        self._sessions: dict[str, Session] = {}
        self._creating: dict[int, int] = {}
        #: adopted sessions whose agent runs (or ran) an execution no history entry records,
        #: or has not dialled in yet (``None``: busy in code that holds the GIL, say)
        self._unfinished: list[tuple[Session, int | None]] = []
        self.log = ExecutionLog(repo)
        #: closed sessions whose container is still going (``close``), by id
        self._closing: dict[str, Session] = {}
        #: their closes, run in the background, waited for a moment at shutdown
        self._tasks = TaskSupervisor()
        #: told of each session the idle reaper closes (the audit trail's "closed by whom")
        self.on_reaped: Callable[[Session, str], object] | None = None
        #: whether this controller purges the group's old dead sessions' rows now (the
        #: purges' lease holder); closing its own idle sessions it does regardless
        self.purge_here: Callable[[], bool] = lambda: True

    # --- lookup ---------------------------------------------------------------------------

    def get(self, caller: Identity, session_id: str) -> Session:
        """The caller's session: 404 when it is not theirs or not there, 410 when it died."""
        session = self._sessions.get(check_session_id(session_id))
        if session is None and session_id in self._arriving:
            raise ServiceUnavailableError(
                f"session '{session_id}' is being taken over from a controller that stopped; "
                "try again shortly",
                retry_after=2.0,
            )
        if session is None or session.owner_id != caller.user_id:
            raise NotFoundError(f"no session '{session_id}'")
        if not session.alive:
            raise GoneError(f"session '{session_id}' is no longer available: {session.dead_reason}")
        session.last_used = time.time()
        return session

    def owned_by(self, caller: Identity) -> list[Session]:
        """The caller's alive sessions this controller holds, oldest first."""
        return sorted(
            (s for s in self._sessions.values() if s.owner_id == caller.user_id and s.alive),
            key=lambda s: s.created_at,
        )

    async def listed(self, caller: Identity) -> list[dict[str, Any]]:
        """The caller's alive sessions on every controller of the group, oldest first."""
        here = self.owned_by(caller)
        known = {s.id for s in here}
        others = [
            r
            for r in await self._repo.alive_of(caller.user_id)
            if r.id not in known and r.controller not in (None, self._me)
        ]
        listed = [(s.created_at, s.to_json()) for s in here]
        listed += [(r.created_at, listing(r.id, r.name, r.owner_name)) for r in others]
        return [entry for _, entry in sorted(listed, key=lambda pair: pair[0])]

    async def held_elsewhere(
        self, caller: Identity | None, session_id: str
    ) -> SessionRecord | None:
        """The record of the caller's alive session (anyone's, for ``None``: an Owner's
        administration) when another controller of the group holds it (its requests go
        there: ``sessions/forwarding.py``); ``None`` when this one does, or when nobody
        does (the usual 404 or 410 answers then)."""
        if session_id in self._sessions or session_id in self._closing:
            return None
        try:
            check_session_id(session_id)
        except O16nError:
            return None
        record = await self._repo.get(session_id)
        if (
            record is None
            or (caller is not None and record.owner_id != caller.user_id)
            or record.state != "alive"
            or record.controller in (None, self._me)
        ):
            return None
        return record

    async def others(self) -> list[SessionRecord]:
        """Every alive session the other controllers of the group hold."""
        return [
            r for r in await self._repo.everyone_alive() if r.controller not in (None, self._me)
        ]

    # --- lifecycle ------------------------------------------------------------------------

    async def create(
        self, caller: Identity, name: str | None, snapshot: SnapshotSource | None = None
    ) -> Session:
        """A new session on a warm container (or a freshly started one). With ``snapshot``
        (which reads its image and workspace tarball, once the caller may have one more
        session) the container starts from the snapshot's image and the agent restores the
        workspace."""
        self._reserve(caller)
        limit = self._settings.sessions_per_user
        try:
            session_id = str(uuid.uuid4())
            source = None
            if snapshot is not None:
                started = timing.now()
                source = await snapshot()
                timing.record("restore", started)
            sandbox = await self._sandbox_for(caller, session_id, source)
            now = time.time()
            session = Session(
                id=session_id,
                name=name or _random_name(),
                owner_id=caller.user_id,
                owner_name=caller.username,
                sandbox=sandbox,
                created_at=now,
                last_used=now,
            )
            try:
                if not await self._repo.insert(self._record(session), limit):
                    raise _over_limit(
                        caller, limit, f"{limit} open sessions on this server's controllers"
                    )
            except BaseException:
                await self._sandboxes.destroy(sandbox)
                raise
            self._sessions[session.id] = session
            self.log.follow(session.id)
            log.info("session created", extra={"session": session.id, "user": caller.username})
            return session
        finally:
            self._creating[caller.user_id] -= 1

    async def _sandbox_for(
        self, caller: Identity, session_id: str, snapshot: tuple[str, Path] | None
    ) -> Sandbox:
        started = timing.now()
        if snapshot is None:
            warm = await self._pool.take()
            if warm is None:
                warm = await self._sandboxes.launch(
                    "session", owner=caller.username, ident=session_id
                )
            timing.record("acquire", started)
            return warm
        environment, archive = snapshot
        async with contextlib.AsyncExitStack() as stack:
            try:
                blob = await stack.enter_async_context(open_source(archive))
            except FileNotFoundError:
                raise NotFoundError("the content of the snapshot is missing") from None
            sandbox = await self._sandboxes.launch(
                "session", owner=caller.username, ident=session_id, environment=environment
            )
            timing.record("acquire", started)
            started = timing.now()
            try:
                await sandbox.call("snapshot_load", blob=blob, timeout=AGENT_TIMEOUT)
            except BaseException:
                await self._sandboxes.destroy(sandbox)
                raise
            finally:
                timing.record("restore", started)
        return sandbox

    def _reserve(self, caller: Identity) -> None:
        open_now = sum(
            1 for s in self._sessions.values() if s.owner_id == caller.user_id and s.alive
        )
        # A closed session whose code still runs (code that ignores the interrupt keeps its
        # container for up to CLOSE_GRACE seconds) counts until it stops: else closing and
        # opening sessions in a loop would hold any number of containers.
        stopping = sum(
            1 for s in self._closing.values() if s.owner_id == caller.user_id and s.lock.locked()
        )
        pending = self._creating.get(caller.user_id, 0)
        limit = self._settings.sessions_per_user
        if open_now + stopping + pending >= limit:
            held = f" and {stopping} closed ones whose code has not stopped yet" if stopping else ""
            raise _over_limit(caller, limit, f"{open_now} open sessions{held}")
        self._creating[caller.user_id] = pending + 1

    async def close(self, caller: Identity, session_id: str, *, force: bool = False) -> None:
        """Close a session; its container goes in the background.

        The session's record is deleted before this returns, so from then on every call
        finds no session (404), the owner's quota no longer counts it, and a controller
        that dies before the container is gone reaps it at its next start (it adopts only
        containers an alive record names). Then, in the background:

        A plain close (ML Server's ``closeSession``) does not kill the interpreter: running
        code is interrupted, its execution answered as for a cancel, and the container
        removed once the code stopped (after ``CLOSE_GRACE`` seconds at most). ``force``
        (``closeSessionByForce``) kills it: the container is removed at once, and a
        running execution is answered with why. A force may cut a plain close short."""
        session = self._sessions.get(check_session_id(session_id))
        if session is None and force:
            session = self._closing.get(session_id)
        if session is None or session.owner_id != caller.user_id or (session.closing and not force):
            raise NotFoundError(f"no session '{session_id}'")
        if not session.closing:
            await self._repo.delete(session.id)
            if not force and session.id in self._closing:  # another close came first
                raise NotFoundError(f"no session '{session_id}'")
        if not session.closing:
            session.closing = True
            self._sessions.pop(session.id, None)
            self._closing[session.id] = session
        self._tasks.spawn(f"session-close-{session.id}", self._finish_close(session, force))

    async def _finish_close(self, session: Session, force: bool) -> None:
        """Stop what runs (a plain close) and remove the container of a closed session."""
        try:
            if force:
                await self._end(session, CLOSED_BY_FORCE)
            else:
                await self._stop_running(session)
                await self._end(session, "closed")
        finally:
            self._closing.pop(session.id, None)

    async def _stop_running(self, session: Session) -> None:
        """Interrupt what runs in ``session`` and wait, up to ``CLOSE_GRACE`` seconds, for
        its call to end (calls waiting behind it find the session closing)."""
        if not session.lock.locked():
            return
        await self._interrupt(session)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                await session.lock.acquire()
                session.lock.release()

    async def cancel(self, caller: Identity, session_id: str) -> bool:
        """Interrupt the running execution (KeyboardInterrupt in user code); False if idle."""
        return await self._interrupt(self.get(caller, session_id))

    async def _interrupt(self, session: Session) -> bool:
        if not session.alive or not session.executing or session.sandbox is None:
            return False
        session.cancel_requested = True
        return await session.sandbox.interrupt()

    # --- administration (any owner's session; the caller is an Owner) ---------------------

    def everyone(self) -> list[Session]:
        """Every session this controller knows, the recently dead included, oldest first."""
        return sorted(self._sessions.values(), key=lambda s: s.created_at)

    def find(self, session_id: str) -> Session:
        session = self._sessions.get(check_session_id(session_id))
        if session is None:
            raise NotFoundError(f"no session '{session_id}'")
        return session

    async def close_by_admin(self, session_id: str) -> Session:
        """End a session now, even while code runs: its container is removed by force, not
        waited for; the execution's caller gets a failed result and the owner's next call
        410 "closed by an administrator"."""
        session = self.find(session_id)
        if session.alive:
            await self._end(session, CLOSED_BY_ADMIN)
        return session

    async def cancel_any(self, session_id: str) -> bool:
        """Interrupt what runs in any session; False when nothing runs."""
        return await self._interrupt(self.find(session_id))

    # --- execution ------------------------------------------------------------------------

    async def execute(
        self, caller: Identity, session_id: str, request: ExecuteRequest
    ) -> dict[str, Any]:
        session = self.get(caller, session_id)
        sandbox = await self._hold(session)
        try:
            seq = session.history_length + 1
            if seq - self.log.written(session.id) > WRITE_BEHIND_MAX:
                await self._catch_up()
                if session.closing:  # closed meanwhile: its close interrupted nothing
                    raise NotFoundError(f"no session '{session.id}'")
            session.executing, session.cancel_requested = True, False
            args = {
                "code": request.code,
                "inputs": [p.model_dump() for p in request.inputParameters or []],
                "outputs": request.outputParameters or [],
                "console_limit": self._settings.console_output_max,
                "seq": seq,  # the agent keeps the result under it, for a restarted controller
                "recorded": self.log.written(session.id),  # until the history has it
            }
            try:
                result, _ = await self._run(session, sandbox, "execute", args, ExecuteReply)
            finally:
                session.executing = False
            self._remember(session, seq, request.code, result)
        finally:
            session.lock.release()
        return result

    async def _catch_up(self) -> None:
        """Write the history now: the session's agent keeps what is not written. A store
        that fails (full, locked) does not fail the execution; the writer retries."""
        with contextlib.suppress(InsufficientStorage, StoreBusy):
            await self.log.flush()

    def _remember(self, session: Session, seq: int, code: str, result: dict[str, Any]) -> None:
        if session.closing:
            return  # its record is gone
        session.console = result["consoleOutput"]
        session.history_length = seq
        self.log.record(session.id, seq, code, session.console)

    async def _run(
        self,
        session: Session,
        sandbox: Sandbox,
        op: str,
        args: dict[str, Any],
        model: type[ExecuteReply],
    ) -> tuple[dict[str, Any], ExecuteReply | None]:
        """Run ``op`` (``execute``, or ``execution_result`` after a restart) under the time
        limit; the client's result, and the agent's reply when it sent a valid one."""
        limit = self._settings.execute_timeout
        outcome = await sandbox.run(op, args, timeout=limit, grace=10.0)
        if outcome.stuck:
            reason = (
                f"the execution exceeded the time limit of {limit} s and did not stop when "
                "interrupted; the session was closed"
            )
            await self._end(session, reason)
            return execute_failure(reason), None
        if outcome.reply is None:
            await self._end(session, outcome.reason)
            reason = session.dead_reason or outcome.reason  # a close, say, told it first
            return execute_failure(f"the session ended during the execution: {reason}"), None
        raw = outcome.reply
        started = timing.now()
        try:
            reply = model.model_validate(raw)
        except ValidationError:
            reason = "its agent sent a malformed reply"
            await self._end(session, reason)
            return execute_failure(f"the session was closed: {reason}"), None
        error = reply.error
        if reply.cancelled and outcome.timed_out:
            error = f"the execution exceeded the time limit of {limit} s and was interrupted"
        elif reply.cancelled and session.closing:
            error = "the execution was interrupted: the session was closed (DELETE /sessions/{id})"
        elif reply.cancelled and session.cancel_requested:
            error = "the execution was cancelled (POST /sessions/{id}/cancel)"
        result: dict[str, Any] = {
            "success": reply.success,
            "errorMessage": error,
            "consoleOutput": reply.console[: self._settings.console_output_max + 200],
            **changed_files(reply.changed_files, reply.changed_total),
            "outputParameters": [{"name": o.name, "value": o.value} for o in reply.outputs],
        }
        timing.record("encode", started)
        return result, reply

    @asynccontextmanager
    async def using(self, caller: Identity, session_id: str) -> AsyncIterator[Sandbox]:
        """The caller's session's sandbox, held exclusively; a dead agent ends the session."""
        session = self.get(caller, session_id)
        async with self._exclusive(session) as sandbox:
            try:
                yield sandbox
            except (AgentGone, AgentProtocolError, AgentTimeout) as exc:
                reason = await self._died(session, exc)
                raise GoneError(f"session '{session.id}' ended: {reason}") from None

    async def call(
        self,
        caller: Identity,
        session_id: str,
        op: str,
        args: dict[str, Any] | None = None,
        blob: bytes | BlobSource | None = None,
        *,
        sink: BlobSink | None = None,
        blob_limit: int = 0,
    ) -> Reply:
        """One agent operation on the caller's session (workspace, files, snapshots);
        ``sink`` and ``blob_limit`` as in ``AgentLink.call``."""
        async with self.using(caller, session_id) as sandbox:
            return await sandbox.call(
                op, args, blob=blob, timeout=AGENT_TIMEOUT, sink=sink, blob_limit=blob_limit
            )

    async def history(self, caller: Identity, session_id: str) -> list[str]:
        session = self.get(caller, session_id)
        try:
            await self.log.flush()
        except (InsufficientStorage, StoreBusy):  # a read goes on: stored plus still pending
            stored = await self._repo.history(session.id)
            return stored + self.log.pending(session.id, after=len(stored))
        return await self._repo.history(session.id)

    def console(self, caller: Identity, session_id: str) -> str:
        return self.get(caller, session_id).console

    @asynccontextmanager
    async def _exclusive(self, session: Session) -> AsyncIterator[Sandbox]:
        """Hold the session's lock, waiting a bounded time for a running execution."""
        sandbox = await self._hold(session)
        try:
            yield sandbox
        finally:
            session.lock.release()

    async def _hold(self, session: Session) -> Sandbox:
        """Take the session's lock, waiting a bounded time for a running execution; its
        sandbox. The caller releases the lock (``execute`` itself: a context manager per
        call was a tenth of its own time)."""
        wait = self._settings.session_busy_wait
        if session.lock.locked() and wait <= 0:
            raise _busy(session)
        try:
            async with asyncio.timeout(wait if wait > 0 else None):
                await session.lock.acquire()
        except TimeoutError:
            raise _busy(session) from None
        if session.closing or not session.alive or session.sandbox is None:
            session.lock.release()
            if session.closing:
                raise NotFoundError(f"no session '{session.id}'")
            raise GoneError(f"session '{session.id}' is no longer available: {session.dead_reason}")
        session.last_used = time.time()
        return session.sandbox

    # --- death and teardown ---------------------------------------------------------------

    async def _died(self, session: Session, exc: O16nError) -> str:
        """Find out why a session's agent went away, record it, remove the container."""
        reason = exc.message
        if session.sandbox is not None:
            reason = await session.sandbox.end_reason(exc)
        await self._end(session, reason)
        return session.dead_reason or reason  # the engine's events may have told it first

    async def on_exit(self, key: str, note: str = "") -> None:
        """A container stopped by itself (``Sandboxes.watch``): if a session's, end that
        session now with the reason, so that it is no longer listed and calls get 410
        rather than failing one by one."""
        for session in list(self._sessions.values()):
            sandbox = session.sandbox
            if session.alive and sandbox is not None and sandbox.key == key:
                report = await sandbox.exit_report()
                if report is not None and session.sandbox is sandbox:
                    await self._end(session, report.describe() + note)
                return

    async def _end(self, session: Session, reason: str) -> None:
        """Mark a session dead (unless it is being closed) and remove its container, even
        when the database cannot take the mark (full or locked): nothing else would."""
        sandbox, session.sandbox = session.sandbox, None
        handle, session.reconnecting = session.reconnecting, None
        self.log.forget(session.id)
        try:
            if session.dead_reason is None:
                session.dead_reason = reason
                if not session.closing:
                    log.warning("session ended", extra={"session": session.id, "reason": reason})
                    await self._repo.mark_dead(session.id, reason)
        finally:
            if sandbox is not None:
                await self._sandboxes.destroy(sandbox)
            elif handle is not None:
                await self._sandboxes.destroy(handle)

    async def reap_idle(self) -> None:
        """Close sessions idle for longer than the timeout; forget old dead ones."""
        limit = self._settings.session_idle_timeout
        now = time.time()
        for session in list(self._sessions.values()):
            if session.alive and not session.executing and now - session.last_used > limit:
                await self._end(session, f"closed after {limit} s without use")
                if self.on_reaped is not None:
                    self.on_reaped(session, "idle")
            elif not session.alive and now - session.last_used > DEAD_RECORDS_KEPT:
                self._sessions.pop(session.id, None)
        if self.purge_here():  # the rows are the group's: one controller purges them
            await self._repo.purge_dead(now - DEAD_RECORDS_KEPT)

    async def run_idle_reaper(self) -> None:
        interval = min(30.0, self._settings.session_idle_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except O16nError as exc:
                log.warning("idle reaper failed", extra={"error": exc.message})
            except Exception:  # the database, say: try again at the next round
                log.exception("idle reaper failed")

    async def detach(self) -> None:
        """At shutdown: write what is pending, and give closed sessions' containers a
        moment to go. The others stay for the next controller; their links close with the
        sandboxes' listeners, after this."""
        await self._tasks.close(grace=SHUTDOWN_WAIT)
        await self.log.flush()

    # --- restart --------------------------------------------------------------------------

    async def adopt(self, owned: list[ContainerHandle]) -> set[str]:
        """Re-link the sessions an earlier controller left running; returns the keys kept."""
        records = await self._repo.alive(self._me)
        by_key = await self._handles(records, owned, self._me)
        results = await asyncio.gather(*(self._adopt_safely(r, by_key) for r in records))
        for record in await self._repo.dead():
            self._sessions[record.id] = self._session(record, None, record.dead_reason)
        earlier = [
            r.id for r, key in zip(records, results, strict=True) if key and not r.controller
        ]
        if earlier:  # rows from before groups: this controller's from now on
            await self._repo.claim(earlier, self._me)
        return {key for key in results if key is not None}

    async def _handles(
        self, records: list[SessionRecord], listed: list[ContainerHandle], of: str
    ) -> dict[str, ContainerHandle]:
        """The containers of ``records`` by key: among ``listed`` (instance ``of``'s), and
        among those of the instances that made them (a session taken over keeps its
        maker's label), each with the endpoint its row names (where its agent dials)."""
        found = {h.key: h for h in listed}
        makers = {r.origin for r in records if r.origin and r.origin != of}
        for maker in sorted(makers):
            for handle in await self._sandboxes.runtime.list_owned(instance=maker):
                found.setdefault(handle.key, handle)
        for record in records:
            made = found.get(record.container_key)
            if made is not None and record.endpoint and made.endpoint != record.endpoint:
                found[record.container_key] = dataclasses.replace(made, endpoint=record.endpoint)
        return found

    async def _adopt_safely(
        self, record: SessionRecord, by_key: dict[str, ContainerHandle]
    ) -> str | None:
        """``_adopt_one``, whatever fails: a session that cannot be adopted (the database
        failing half way, say) is ended with why, never left held by nobody."""
        try:
            return await self._adopt_one(record, by_key)
        except Exception as exc:
            reason = f"it could not be taken over ({type(exc).__name__}: {exc})"[:300]
            log.exception("session adoption failed", extra={"session": record.id})
            with contextlib.suppress(Exception):
                await self._repo.mark_dead(record.id, reason)
            self._sessions[record.id] = self._session(record, None, reason)
            return None

    async def _adopt_one(
        self, record: SessionRecord, by_key: dict[str, ContainerHandle]
    ) -> str | None:
        handle = by_key.get(record.container_key)
        reason = "its container was gone after a controller restart"
        if handle is not None:
            try:
                sandbox = await self._sandboxes.adopt(handle, self._settings.adopt_timeout)
            except AgentGone:
                # Its container runs but its agent is silent: user code that holds the GIL
                # keeps even the agent's redialling thread away. Wait for it in the
                # background (``collect_unfinished``), the session busy meanwhile.
                session = self._session(record, None, None)
                session.history_length = await self._repo.history_length(record.id)
                self.log.follow(record.id, session.history_length)
                session.reconnecting = handle
                await session.lock.acquire()
                session.executing = True
                self._sessions[record.id] = session
                self._unfinished.append((session, None))
                log.info("session adopted, its agent not yet back", extra={"session": record.id})
                return handle.key
            except O16nError as exc:
                reason = f"it could not be reconnected after a controller restart ({exc.message})"
                # not kept: the caller reaps its container with the other leftovers
            else:
                session = self._session(record, sandbox, None)
                session.history_length = await self._repo.history_length(record.id)
                self.log.follow(record.id, session.history_length)
                self._sessions[record.id] = session
                seq = _unrecorded_execution(sandbox.link.hello, session.history_length)
                if seq is not None:  # busy until its result is in: callers get the usual 409
                    await session.lock.acquire()
                    session.executing = True
                    self._unfinished.append((session, seq))
                log.info("session adopted", extra={"session": record.id, "execution": seq})
                return handle.key
        log.warning("session lost at restart", extra={"session": record.id, "reason": reason})
        await self._repo.mark_dead(record.id, reason)
        self._sessions[record.id] = self._session(record, None, reason)
        return None

    # --- the group: a dead controller's sessions ------------------------------------------

    async def take_over(self, now: float) -> int:
        """Take over the sessions of every controller of the group that died (its row
        expired at ``now``) and adopt their containers as a restart would: their state,
        history and running executions carry over. Then remove the dead one's other
        containers (warm, service), which nobody else would: listed before its death is
        checked again, so none it makes after coming back is among them. Returns how many
        sessions were taken. Containers on an engine this controller cannot reach, or whose
        agent does not dial back here, end their sessions with the reason."""
        taken = 0
        for dead in await self._repo.orphaned(now):
            if dead == self._me:
                continue
            handles = await self._sandboxes.runtime.list_owned(instance=dead)
            records = await self._repo.take_over(dead, self._me, now)
            if not records:
                continue
            log.warning(
                "taking over the sessions of a controller that stopped answering",
                extra={"controller": dead, "sessions": len(records)},
            )
            arriving = {r.id for r in records}
            self._arriving |= arriving
            try:
                by_key = await self._handles(records, handles, dead)
                kept = await asyncio.gather(*(self._adopt_safely(r, by_key) for r in records))
            except BaseException:
                # stopped half way (this controller stopping, the engine failing to list):
                # what was not adopted goes back to the dead one, for the next round or
                # another controller to take over, rather than ending or being stranded
                back = [r.id for r in records if r.id not in self._sessions]
                if back:
                    await asyncio.shield(self._repo.hand_back(back, dead, self._me))
                raise
            finally:
                self._arriving -= arriving
                self.collect_unfinished(self._tasks.spawn)
            taken += len(records)
            if await self._repo.alive_controller(dead, time.time()):
                continue  # it is back: what is left is its own again
            named = await self._repo.alive_keys()
            leftovers = [h for h in handles if h.key not in named and h.key not in kept]
            await self._sandboxes.reap(leftovers)
        return taken

    async def run_take_over(self, interval: float) -> None:
        """Run forever: every ``interval`` seconds, take over dead controllers' sessions."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.take_over(time.time())
            except O16nError as exc:
                log.warning("taking sessions over failed", extra={"error": exc.message})
            except Exception:  # the database, say: try again at the next round
                log.exception("taking sessions over failed")

    def collect_unfinished(self, spawn: Spawn) -> None:
        """After ``adopt``: one background task per execution an earlier controller started
        and did not record, which waits for its result and records it (and first, for an
        agent that has not dialled in yet, waits for it)."""
        unfinished, self._unfinished = self._unfinished, []
        for session, seq in unfinished:
            spawn(f"session-collect-{session.id}", self._collect(session, seq))

    async def _collect(self, session: Session, seq: int | None) -> None:
        """Ask the agent for the results of the executions up to ``seq`` the history does
        not record (answered when ``seq`` ends, under the usual time limit, counted from
        now) and record them as ``execute`` would have. The session's lock, taken at
        adoption, is held until then."""
        try:
            if session.reconnecting is not None:
                seq = await self._reconnect(session, session.reconnecting)
            if seq is None:
                return
            for number in range(session.history_length + 1, seq + 1):
                sandbox = session.sandbox
                if sandbox is None or not session.alive:
                    return
                await self._collect_one(session, sandbox, number)
        finally:
            session.executing = False
            session.lock.release()

    async def _collect_one(self, session: Session, sandbox: Sandbox, seq: int) -> None:
        session.cancel_requested = False
        try:
            result, reply = await self._run(
                session, sandbox, "execution_result", {"seq": seq}, CollectedReply
            )
        except O16nError as exc:  # the agent kept no such result (404): nothing to record
            log.warning(
                "execution result not collected",
                extra={"session": session.id, "execution": seq, "reason": exc.message},
            )
            return
        if isinstance(reply, CollectedReply):
            self._remember(session, seq, reply.code, result)
            log.info("execution collected", extra={"session": session.id, "execution": seq})

    async def _reconnect(self, session: Session, handle: ContainerHandle) -> int | None:
        """Wait, up to the execution time limit, for an adopted session's silent agent; the
        number of the execution to collect then, if any. One that never comes ends the
        session."""
        limit = self._settings.execute_timeout
        try:
            sandbox = await self._sandboxes.reconnect(handle, limit)
        except O16nError as exc:
            if session.alive:
                await self._end(
                    session,
                    f"its agent did not reconnect after a controller restart ({exc.message})",
                )
            return None
        if not session.alive:  # closed meanwhile
            await self._sandboxes.destroy(sandbox)
            return None
        session.sandbox, session.reconnecting = sandbox, None
        log.info("session reconnected", extra={"session": session.id})
        return _unrecorded_execution(sandbox.link.hello, session.history_length)

    def _session(self, record: SessionRecord, sandbox: Sandbox | None, dead: str | None) -> Session:
        return Session(
            id=record.id,
            name=record.name,
            owner_id=record.owner_id,
            owner_name=record.owner_name,
            sandbox=sandbox,
            created_at=record.created_at,
            last_used=max(record.last_used_at, time.time() if dead is None else 0),
            console=record.console_output,
            dead_reason=dead,
        )

    def _record(self, session: Session) -> SessionRecord:
        assert session.sandbox is not None
        handle = session.sandbox.handle
        return SessionRecord(
            id=session.id,
            name=session.name,
            owner_id=session.owner_id,
            owner_name=session.owner_name,
            runtime=RUNTIME,
            container_key=handle.key,
            container_id=handle.engine_id,
            state="alive",
            dead_reason=None,
            created_at=session.created_at,
            last_used_at=session.last_used,
            console_output="",
            controller=self._me,
            endpoint=handle.endpoint,
            origin=self._me,
        )


def _unrecorded_execution(hello: dict[str, Any], recorded: int) -> int | None:
    """The number of the execution an agent's hello names (running, or ended while no
    controller was there) when the history does not record it yet: the results from
    ``recorded + 1`` up to it are to be collected. The hello is untrusted: anything but a
    number at most ``UNRECORDED_MAX`` ahead is ignored."""
    execution = hello.get("execution")
    if not isinstance(execution, dict):
        return None
    seq = execution.get("seq")
    return seq if type(seq) is int and recorded < seq <= recorded + UNRECORDED_MAX else None


def _over_limit(caller: Identity, limit: int, held: str) -> TooManyRequestsError:
    return TooManyRequestsError(
        f"'{caller.username}' already has {held}, the limit is {limit}; close one "
        "(DELETE /sessions/{id}) first"
    )


def _busy(session: Session) -> ConflictError:
    return ConflictError(
        f"session '{session.id}' is busy with another execution; try again later or cancel it "
        "(POST /sessions/{id}/cancel)"
    )


def _random_name() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(15))


#: The app's session manager.
SESSIONS = web.AppKey("sessions", SessionManager)
