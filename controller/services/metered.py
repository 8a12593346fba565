"""``@timed_consume``: a consume request in ``o16n_consume_duration_seconds``, by outcome,
labelled with its service's name and version only when that version exists (a client
naming made-up services makes no series; a deleted version's series go with it)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Histogram

from controller.errors import NotFoundError
from controller.metrics.definitions import Outcome, consume_child
from controller.metrics.http import timed
from controller.services.registry import SERVICES


def _child(request: web.Request, outcome: Outcome) -> Histogram | None:
    try:
        service = request.app[SERVICES].get(
            request.match_info["name"], request.match_info["version"]
        )
    except NotFoundError:
        return None
    return consume_child(service.record.name, service.record.version, outcome)


timed_consume = timed(_child)
