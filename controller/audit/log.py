"""The audit trail: who did what, from where, to what, and how it ended.

Request paths never wait on SQLite for it: ``record`` logs the entry at once as a JSON line
on the ``o16n.audit`` logger and queues it; a background task writes the queue in one
transaction every ``FLUSH_SECONDS`` (readers flush first, so a page is never behind).
Handlers opt in with ``@audited(action)`` (``controller.audit.trail``); the consume path has
no such handler and never writes an audit row. Entries carry names, ids and SHA-256
digests, never a secret, password, token or code.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from controller.errors import O16nError
from controller.http.client_address import request_address
from controller.http.request_id import REQUEST_ID_KEY
from controller.settings import Network
from controller.store.audit import AuditEntry, AuditQuery, AuditRepo

log = logging.getLogger(__name__)
audit_log = logging.getLogger("o16n.audit")

FLUSH_SECONDS = 0.5
MAX_PENDING = 10_000  # beyond this (a database that stays locked), the oldest go to the log only

#: the request being handled, so that deeper code (token reuse) can name its address
current_request: contextvars.ContextVar[web.Request | None] = contextvars.ContextVar(
    "o16n_audit_request", default=None
)


def request_id(request: web.Request | None) -> str | None:
    """The id the request-id middleware gave ``request``; ``None`` outside a request."""
    return request.get(REQUEST_ID_KEY) if request is not None else None


def sha256(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() if text else None


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "throttled"
    if status == 403:
        return "denied"
    return "failed"


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "time": datetime.fromtimestamp(entry.at, UTC).isoformat().replace("+00:00", "Z"),
        "actor": entry.actor,
        "address": entry.address,
        "action": entry.action,
        "target": entry.target,
        "outcome": entry.outcome,
        "status": entry.status,
        "requestId": entry.request_id,
        "detail": entry.detail,
    }


class AuditLog:
    def __init__(
        self, repo: AuditRepo, retention_days: int, trusted_proxies: tuple[Network, ...] = ()
    ) -> None:
        self._repo = repo
        self._trusted = trusted_proxies
        self._retention = retention_days * 86400.0
        self._pending: list[AuditEntry] = []
        self._flushing = asyncio.Lock()
        self._wake = asyncio.Event()

    def _address(self, request: web.Request | None) -> str:
        """The client's address as the login throttle sees it (through trusted proxies)."""
        if request is None:
            return ""
        return request_address(request, self._trusted)

    def record(
        self,
        action: str,
        target: str,
        outcome: str = "ok",
        *,
        actor: str,
        status: int | None = None,
        detail: dict[str, Any] | None = None,
        request: web.Request | None = None,
    ) -> AuditEntry:
        """Log and queue one entry; address and request id come from ``request``, else
        from the request being handled."""
        request = request if request is not None else current_request.get()
        entry = AuditEntry(
            at=time.time(),
            actor=actor[:256],
            address=self._address(request),
            action=action,
            target=target[:512],
            outcome=outcome,
            status=status,
            request_id=request_id(request),
            detail=detail or {},
        )
        emit(entry)
        if len(self._pending) >= MAX_PENDING:
            del self._pending[0]
        self._pending.append(entry)
        return entry

    async def flush(self) -> None:
        async with self._flushing:
            batch, self._pending = self._pending, []
            try:
                await self._repo.append(batch)
            except BaseException:
                self._pending[:0] = batch  # written next round
                raise

    async def run(self) -> None:
        """Write what is queued, every ``FLUSH_SECONDS``, until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                if self._pending:
                    try:
                        await self.flush()
                    except O16nError as exc:
                        log.warning("audit write failed; retrying", extra={"error": exc.message})
        finally:
            await asyncio.shield(self.close())

    async def close(self) -> None:
        """Write what is queued; if the database cannot take it now (full, locked), the
        entries were logged already and that must do."""
        if not self._pending:
            return
        try:
            await self.flush()
        except O16nError as exc:
            log.warning(
                "audit entries not written to the database; they are in the o16n.audit log",
                extra={"entries": len(self._pending), "error": exc.message},
            )
            self._pending.clear()

    async def page(self, query: AuditQuery) -> list[AuditEntry]:
        await self.flush()
        return await self._repo.page(query)

    async def purge(self) -> int:
        """Delete entries older than the retention (run by the hourly purge)."""
        return await self._repo.purge(time.time() - self._retention)


def emit(entry: AuditEntry) -> None:
    """The entry as a JSON line on the ``o16n.audit`` logger."""
    audit_log.info(json.dumps(entry_json(entry), sort_keys=True))


#: The app's audit log.
AUDIT = web.AppKey("audit", AuditLog)
