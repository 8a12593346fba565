"""``GET /admin/audit``: the audit trail, newest first, a page at a time.

``cursor`` is opaque: pass back the ``nextCursor`` of the previous page (``null`` on the
last page). ``since``/``until`` are ISO 8601 times or Unix seconds; ``action`` matches
exactly, or as a prefix when it ends with ``*`` (``user.*``).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.admin.common import owner, query
from controller.audit.log import AUDIT, entry_json
from controller.errors import ValidationFailed
from controller.http.responses import json_response
from controller.store.audit import AuditQuery

routes = web.RouteTableDef()


class AuditParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = Field(None, min_length=1, max_length=256)
    action: str | None = Field(None, min_length=1, max_length=100)
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=100)


_MAX_ID = 2**63 - 1  # the largest rowid SQLite has


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a1:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        # ASCII digits within SQLite's 64-bit integers: a forged id is a 400, not a 500
        if prefix != "a1" or not (number.isascii() and number.isdigit()):
            raise ValueError(cursor)
        if int(number) > _MAX_ID:
            raise ValueError(cursor)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            "invalid request: 'cursor': not a cursor this server issued (use nextCursor)"
        ) from None


def _seconds(at: datetime | None) -> float | None:
    """Unix seconds; a time without a zone is UTC, like every time the trail shows (never
    the server's local zone)."""
    if at is None:
        return None
    return (at.replace(tzinfo=UTC) if at.tzinfo is None else at).timestamp()


@routes.get("/admin/audit")
async def audit_trail(request: web.Request) -> web.Response:
    owner(request)
    params = query(request, AuditParams)
    entries = await request.app[AUDIT].page(
        AuditQuery(
            since=_seconds(params.since),
            until=_seconds(params.until),
            actor=params.actor,
            action=params.action,
            before_id=decode_cursor(params.cursor) if params.cursor else None,
            limit=params.limit + 1,  # one more: is there a next page?
        )
    )
    more = len(entries) > params.limit
    entries = entries[: params.limit]
    last = entries[-1].id if more and entries else None
    return json_response(
        {
            "entries": [entry_json(e) for e in entries],
            "nextCursor": encode_cursor(last) if last is not None else None,
        }
    )
