"""The controller's own open-file limit: raised to the hard limit at start, shown in /status.

Every client connection, agent socket and database file is a descriptor; the soft limit
Linux starts a process with (often 1,024) is far below what a busy controller holds, and a
process may raise its soft limit up to its hard limit without privileges.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: Below this many descriptors /status warns: a few thousand clients would exhaust them.
WARN_BELOW = 4096


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the (soft, hard) limits after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit on some systems
            log.warning("could not raise the open-file limit", extra={"error": str(exc)})
        else:
            log.info("raised the open-file limit", extra={"from": soft, "to": hard})
            soft = hard
    return soft, hard


def open_files_node() -> dict[str, Any]:
    """The ``openFiles`` node of /status: the limits and how many descriptors are open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use: int | None = sum(1 for _ in Path("/proc/self/fd").iterdir())
    except OSError:
        in_use = None
    status = "warn" if soft < WARN_BELOW else "pass"
    details = {"softLimit": soft, "hardLimit": hard, "open": in_use}
    return {"statusCode": status, "components": {}, "details": details}


async def limits_ctx(app: web.Application) -> AsyncIterator[None]:
    """Raise the limit before anything opens descriptors."""
    soft, hard = raise_open_file_limit()
    if soft < WARN_BELOW:
        log.warning("the open-file limit is low", extra={"soft": soft, "hard": hard})
    yield
