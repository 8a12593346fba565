"""The domain error tree.

Every error a handler or a lower layer raises on purpose is an :class:`O16nError`.
One middleware (``controller.http.middlewares``) turns them into the JSON body
``{"message", "exceptionType"}`` with the status each class names. Lower layers
(the store, the runtime engines) never raise HTTP errors; Docker's own
exceptions are translated into this tree in one place (``controller.runtime.docker.gateway``),
SQLite's in ``controller.store.db``; :func:`translate` names the few low-level failures a
client should hear about (a full disk, a locked database) wherever they surface.

    O16nError                        500  something of ours failed
    ├── BadRequestError              400  the client sent something we cannot accept
    │   └── ValidationFailed         400  a body or parameter failed validation
    ├── UnauthorizedError            401  no, or no valid, credentials
    ├── ForbiddenError               403  authenticated, but not allowed
    ├── NotFoundError                404  no such thing (or not yours)
    ├── RequestTimeoutError          408  the client stopped sending its request body
    ├── ConflictError                409  it exists already / it is busy
    ├── GoneError                    410  it existed and died (a dead session)
    ├── PayloadTooLargeError         413
    ├── TooManyRequestsError         429  carries Retry-After
    ├── NotImplementedFeature        501
    ├── ServiceUnavailableError      503  carries Retry-After
    │   └── StoreBusy                503  another connection holds the database's write lock
    ├── InsufficientStorage          507  a disk the server writes to is full
    └── RuntimeFailure               500  a container, the engine or an agent failed
        ├── EngineUnavailable        503  the engine (Docker, say) does not answer
        ├── AgentProtocolError       500  an agent broke the protocol
        └── AgentGone                500  an agent's connection or container ended
"""

from __future__ import annotations

import errno
import sqlite3


class O16nError(Exception):
    """Base of every deliberate error. ``status`` is the HTTP status it maps to."""

    status: int = 500

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    @property
    def exception_type(self) -> str:
        return type(self).__name__


class BadRequestError(O16nError):
    status = 400


class ValidationFailed(BadRequestError):
    pass


class UnauthorizedError(O16nError):
    status = 401


class ForbiddenError(O16nError):
    status = 403


class NotFoundError(O16nError):
    status = 404


class RequestTimeoutError(O16nError, TimeoutError):
    """Also a ``TimeoutError``: set on a request's body stream, it tells aiohttp not to wait
    for the rest of that body (its lingering read treats a timeout as the end)."""

    status = 408


class ConflictError(O16nError):
    status = 409


class GoneError(O16nError):
    status = 410


class PayloadTooLargeError(O16nError):
    status = 413


class TooManyRequestsError(O16nError):
    status = 429


class NotImplementedFeature(O16nError):
    status = 501


class ServiceUnavailableError(O16nError):
    status = 503


class StoreBusy(ServiceUnavailableError):
    """The database's write lock stayed with another connection (the CLI, a backup) too long."""


class InsufficientStorage(O16nError):
    """The data directory's disk (or quota) is full: writes fail until space is freed."""

    status = 507


class RuntimeFailure(O16nError):
    status = 500


class EngineUnavailable(RuntimeFailure):
    status = 503


class AgentProtocolError(RuntimeFailure):
    pass


class AgentGone(RuntimeFailure):
    pass


#: Seconds a client is told to wait before retrying against a busy database.
STORE_RETRY_AFTER = 2.0
_SQLITE_FULL = 13
_SQLITE_BUSY = 5


def translate(exc: BaseException) -> O16nError | None:
    """The domain error for a low-level failure that is the server's state, not a bug:
    a full disk (``ENOSPC``, ``EDQUOT``, ``SQLITE_FULL``) or a database locked by another
    connection (``SQLITE_BUSY``; not ``SQLITE_LOCKED``, a conflict within one connection,
    which without a shared cache is our bug). Follows ``raise … from`` chains a few
    links deep, so a wrapped ENOSPC is still named; an implicit chain only from an ``OSError``
    or SQLite error, never from anything else: a bug raised while a full disk was being
    handled stays a 500 with its traceback logged. ``None``: not one of those."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, O16nError):
            return seen if isinstance(seen, StoreBusy | InsufficientStorage) else None
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return out_of_space()
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", 0) & 0xFF
            if code == _SQLITE_FULL:
                return out_of_space()
            if code == _SQLITE_BUSY:
                return StoreBusy(
                    "the database is locked by another connection; try again shortly",
                    retry_after=STORE_RETRY_AFTER,
                )
        low_level = isinstance(seen, OSError | sqlite3.Error)
        seen = seen.__cause__ or (seen.__context__ if low_level else None)
    return None


def out_of_space(where: str = "its data directory's disk") -> InsufficientStorage:
    return InsufficientStorage(
        f"the server is out of storage space: {where} is full; "
        "reads and web service calls go on, writes fail until space is freed"
    )
