"""Execution history and last console output, written behind the request.

``execute`` appends here and answers at once; a background task writes what accumulated
in one SQLite transaction. Reading the history flushes first, and shutdown flushes what
is left, so nothing a client could have seen is lost.
"""

from __future__ import annotations

import asyncio
import logging

from controller.store.sessions import SessionsRepo

log = logging.getLogger(__name__)

Entry = tuple[str, int, str, str]  # session id, sequence number, code, console output


class ExecutionLog:
    def __init__(self, repo: SessionsRepo) -> None:
        self._repo = repo
        self._pending: list[Entry] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def record(self, session_id: str, seq: int, code: str, console: str) -> None:
        self._pending.append((session_id, seq, code, console))
        self._wake.set()

    async def run(self) -> None:
        """Run forever (owned by the task supervisor), writing whenever entries arrive. A
        failed write (the database locked or full) is retried; the entries wait for it."""
        backoff = 1.0
        while True:
            await self._wake.wait()
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
