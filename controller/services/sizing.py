"""How large a service's pool is: the sizes a version stores or the server's defaults, and
the checks on sizes an operator asks for."""

from __future__ import annotations

from controller.errors import BadRequestError
from controller.settings import Settings
from controller.store.services import ServiceRecord


def pool_sizes(settings: Settings, record: ServiceRecord) -> tuple[int, int]:
    """The initial and the largest size of ``record``'s pool (at least one container, and
    never fewer than the initial size)."""
    initial = settings.service_pool_initial if record.pool_initial is None else record.pool_initial
    maximum = settings.service_pool_max if record.pool_max is None else record.pool_max
    return initial, max(maximum, initial, 1)


def requested_sizes(
    settings: Settings, initial: int | None, maximum: int | None
) -> tuple[int, int]:
    """The sizes of a pool request (``InitialPoolSize``, ``MaxPoolSize``), defaults filled
    in; 400 when they contradict each other or exceed this server's limit."""
    first = settings.service_pool_initial if initial is None else initial
    most = max(first, 1) if maximum is None else maximum
    if first > most:
        raise BadRequestError(f"InitialPoolSize ({first}) must not exceed MaxPoolSize ({most})")
    limit = settings.service_pool_limit
    if most > limit:
        raise BadRequestError(f"MaxPoolSize may be at most {limit} on this server")
    return first, most
