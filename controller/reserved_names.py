"""The ``o16n-diagnostics-`` names: only a diagnostics run makes users and services named so.

Over the API no one may create them (400), and every ``/services/{name}…`` and
``/api/{name}/…`` request naming one is 404, the list leaves them out: a run's temporary
service is neither visible nor callable by anyone but the run (which uses the managers
directly, not HTTP).
"""

from __future__ import annotations

from aiohttp import web

from controller.errors import BadRequestError, NotFoundError

PREFIX = "o16n-diagnostics-"


def reserved(name: str) -> bool:
    """Whether ``name`` is one only diagnostics may use."""
    return name.lower().startswith(PREFIX)


def refuse_reserved(name: str, what: str) -> None:
    """400 for a name only diagnostics may use (so no one collides with its temporaries)."""
    if reserved(name):
        raise BadRequestError(
            f"the {what} '{name}' is reserved: '{PREFIX}' names belong to diagnostics"
        )


def hide_reserved(request: web.Request, pattern: str) -> None:
    """404 for a service request naming a diagnostics temporary (publishing one is 400)."""
    if request.method == "POST" and pattern in ("/services/{name}", "/services/{name}/{version}"):
        return
    if pattern.startswith(("/services/{name}", "/api/{name}")):
        name = request.match_info.get("name", "")
        if reserved(name):
            raise NotFoundError(f"no web service '{name}'")
