"""The domain error tree.

Every error a handler or a lower layer raises on purpose is an :class:`O16nError`.
One middleware (``controller.http.middlewares``) turns them into the JSON body
``{"message", "exceptionType"}`` with the status each class names. Lower layers
(the store, the runtime backends) never raise HTTP errors; Docker's own
exceptions are translated into this tree in one place (``controller.runtime.docker_gateway``).

    O16nError                        500  something of ours failed
    ├── BadRequestError              400  the client sent something we cannot accept
    │   └── ValidationFailed         400  a body or parameter failed validation
    ├── UnauthorizedError            401  no, or no valid, credentials
    ├── ForbiddenError               403  authenticated, but not allowed
    ├── NotFoundError                404  no such thing (or not yours)
    ├── ConflictError                409  it exists already / it is busy
    ├── GoneError                    410  it existed and died (a dead session)
    ├── PayloadTooLargeError         413
    ├── TooManyRequestsError         429  carries Retry-After
    ├── NotImplementedFeature        501
    ├── ServiceUnavailableError      503  carries Retry-After
    └── RuntimeFailure               500  a container, the engine or an agent failed
        ├── EngineUnavailable        503  the Docker engine does not answer
        ├── AgentProtocolError       500  an agent broke the protocol
        └── AgentGone                500  an agent's connection or container ended
"""

from __future__ import annotations


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


class RuntimeFailure(O16nError):
    status = 500


class EngineUnavailable(RuntimeFailure):
    status = 503


class AgentProtocolError(RuntimeFailure):
    pass


class AgentGone(RuntimeFailure):
    pass
