"""The web console at ``/admin/``: a static page whose script calls the ``/admin`` API.

The page, its script and its stylesheet are public (they hold no data); every call the
script makes carries the Owner's bearer token, kept in ``sessionStorage`` and never in a
cookie, so a cross-site request has nothing to ride on. The files are a fixed allow-list
read from package data, so no path in a URL ever reaches the file system, and each is
served with a Content-Security-Policy that allows only this origin's script and style.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

from controller.http.public import public

#: The console's policy: its own script, style and API calls, nothing inline, no frames.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

#: URL path → (file under ``static/``, content type). Nothing else is served.
FILES: dict[str, tuple[str, str]] = {
    "/admin/": ("index.html", "text/html"),
    "/admin/console/app.js": ("app.js", "text/javascript"),
    "/admin/console/style.css": ("style.css", "text/css"),
}

_HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def _load(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def _handler(name: str, content_type: str) -> Handler:
    body = _load(name)  # read once, at import: a few kilobytes, and never a request's path

    @public
    async def serve(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_HEADERS)

    serve.__name__ = f"console_{name.replace('.', '_')}"
    return serve


@public
async def redirect(request: web.Request) -> web.StreamResponse:
    """``/admin`` → ``/admin/``, so the page's relative URLs resolve."""
    raise web.HTTPPermanentRedirect("/admin/")


routes: list[web.RouteDef] = [
    web.get("/admin", redirect),
    *(web.get(path, _handler(name, kind)) for path, (name, kind) in FILES.items()),
]

#: Every path the console serves: pages, not API operations (left out of Swagger).
PATHS = ("/admin", *FILES)
