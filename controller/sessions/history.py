"""Execution history and last console output, written behind the request.

``execute`` appends here and answers at once; a background task writes what accumulated
over ``FLUSH_DELAY`` seconds in one SQLite transaction (one per execution made history
writes a fifth of the controller's CPU per ``execute``). Reading the history flushes
first, and shutdown flushes what is left. A controller killed before a write loses
nothing either: each session's agent keeps the results not yet written (it is told up to
where they are: ``written``), and the next controller collects them.
"""

from __future__ import annotations

import asyncio
import logging

from controller.store.sessions import SessionsRepo

log = logging.getLogger(__name__)

Entry = tuple[str, int, str, str]  # session id, sequence number, code, console output
#: seconds entries wait for others, to be written in the same transaction
FLUSH_DELAY = 0.05


class ExecutionLog:
    def __init__(self, repo: SessionsRepo) -> None:
        self._repo = repo
        self._pending: list[Entry] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        #: each session's highest execution number written
        self._written: dict[str, int] = {}

    def record(self, session_id: str, seq: int, code: str, console: str) -> None:
        self._pending.append((session_id, seq, code, console))
        self._wake.set()

    def written(self, session_id: str) -> int:
        """The highest number of ``session_id``'s executions known to be written."""
        return self._written.get(session_id, 0)

    def follow(self, session_id: str, written: int = 0) -> None:
        """Count what is written of a session's history from now on; ``written``: what the
        store holds already (a session adopted after a restart)."""
        self._written[session_id] = written

    def forget(self, session_id: str) -> None:
        """A session that runs nothing any more (its last entries are written all the same)."""
        self._written.pop(session_id, None)

    async def run(self) -> None:
        """Run forever (owned by the task supervisor), writing whenever entries arrive,
        after ``FLUSH_DELAY`` seconds. A failed write (the database locked or full) is
        retried; the entries wait for it."""
        backoff = 1.0
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_DELAY)
            self._wake.clear()
            try:
                await self.flush()
                backoff = 1.0
            except Exception:
                log.exception("execution history not written; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                self._wake.set()

    def pending(self, session_id: str, after: int) -> list[str]:
        """The code of ``session_id``'s executions numbered above ``after`` not yet written."""
        return [code for sid, seq, code, _ in self._pending if sid == session_id and seq > after]

    async def flush(self) -> None:
        """Write what is pending. Entries leave the queue only once written, so a flush
        cancelled mid-write (the writer task at shutdown) loses nothing; rewriting is
        harmless because each (session, seq) is inserted at most once."""
        async with self._lock:
            while self._pending:
                entries = self._pending[:]
                await self._repo.record_executions(entries)
                del self._pending[: len(entries)]
                for session_id, seq, _, _ in entries:
                    if seq > self._written.get(session_id, seq):  # followed, and further
                        self._written[session_id] = seq
