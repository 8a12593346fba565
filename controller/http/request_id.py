"""The request's id, where every layer can read it: a leaf module, so that the log
formatters and the audit trail need not import the middlewares that set it."""

from __future__ import annotations

from contextvars import ContextVar

from aiohttp import web

#: set by ``request_id_middleware`` on every request
REQUEST_ID_KEY = web.RequestKey("request_id", str)
#: the same id for log lines written while the request is served (each runs in its own task)
REQUEST_ID: ContextVar[str | None] = ContextVar("o16n_request_id", default=None)
