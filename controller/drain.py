"""Draining the node: no new work starts, what runs goes on.

While draining, new sessions (``POST /sessions``), publishes (``POST /services/{name}`` and
``/{version}``) and batches (``POST /api/{name}/{version}/batch``) get 503 with
``Retry-After``; executions in open sessions, running batches and consume requests go on,
and ``GET /status`` says ``warn`` with the reason. The state lives in this process's memory:
one controller serves a data directory, and a restart ends the drain (an operator drains
*before* a restart, so that is what they want).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.audit.log import current_request
from controller.errors import ServiceUnavailableError
from controller.reserved_names import hide_reserved

#: (method, route pattern) of the requests that start new work
NEW_WORK = frozenset(
    {
        ("POST", "/sessions"),
        ("POST", "/services/{name}"),
        ("POST", "/services/{name}/{version}"),
        ("POST", "/api/{name}/{version}/batch"),
    }
)
DEFAULT_RETRY_AFTER = 300


@dataclass
class Drain:
    draining: bool = False
    reason: str = ""
    since: float | None = None
    by: str = ""
    retry_after: int = DEFAULT_RETRY_AFTER

    def start(self, reason: str, by: str, retry_after: int) -> None:
        if not self.draining:
            self.since = time.time()
        self.draining, self.reason, self.by, self.retry_after = True, reason, by, retry_after

    def stop(self) -> None:
        self.draining, self.reason, self.since, self.by = False, "", None, ""

    def check(self, method: str, pattern: str) -> None:
        """503 for a request that would start new work while draining."""
        if self.draining and (method, pattern) in NEW_WORK:
            raise ServiceUnavailableError(
                f"this node is draining ({self.reason}); new sessions, publishes and batches "
                "are refused until an operator undrains it",
                retry_after=self.retry_after,
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "draining": self.draining,
            "reason": self.reason or None,
            "since": self.since,
            "by": self.by or None,
            "retryAfter": self.retry_after if self.draining else None,
        }


def make_middleware(drain: Drain) -> Any:
    @web.middleware
    async def admin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse new work while draining; hide diagnostics' temporaries; remember the
        request for audit entries made deeper down (refresh-token reuse)."""
        resource = request.match_info.route.resource
        if resource is not None:
            drain.check(request.method, resource.canonical)
            hide_reserved(request, resource.canonical)  # diagnostics' temporary service
        token = current_request.set(request)
        try:
            return await handler(request)
        finally:
            current_request.reset(token)

    return admin_middleware


#: The node's drain state.
DRAIN = web.AppKey("drain", Drain)
