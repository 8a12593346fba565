"""``GET /metrics``: the Prometheus text of the process (``definitions``) and of the app
(``live``).

Not for anonymous clients: the bearer must be an Owner's access token, or the token of
``O16N_METRICS_TOKEN`` (``_FILE``), which Prometheus sends with its ``authorization``
setting; it is compared in constant time. The route is public to the token check of
``auth.middleware`` (which knows only access tokens) and checks its own. A scrape is not
audited. With ``O16N_METRICS=off`` the app has neither this route nor ``metrics_ctx``.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.auth.roles import IDENTITY
from controller.auth.service import AUTH
from controller.errors import UnauthorizedError
from controller.http.public import public
from controller.metrics.definitions import REGISTRY
from controller.metrics.live import LIVE, LiveMetrics
from controller.roles import Role
from controller.settings import Settings, SettingsError, check_metrics_token, env_or_file_secret

routes = web.RouteTableDef()

#: ``O16N_METRICS_TOKEN`` as bytes, or ``None`` (only Owners may read ``/metrics``).
METRICS_TOKEN = web.AppKey[bytes | None]("metrics_token")


@routes.get("/metrics")
@public  # not anonymous: it checks its own bearer (the metrics token, or an Owner's)
async def metrics(request: web.Request) -> web.Response:
    await _authorize(request)
    live = await request.app[LIVE].text()
    # the process' families hold every route's histogram: made on a thread, off the loop
    process = await asyncio.to_thread(generate_latest, REGISTRY)
    response = web.Response(body=process + live)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _authorize(request: web.Request) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError(
            "/metrics needs 'Authorization: Bearer <token>': an Owner's access token or "
            "the metrics token (O16N_METRICS_TOKEN)"
        )
    expected = request.app[METRICS_TOKEN]
    given = token.encode("utf-8", "surrogatepass")
    if expected is not None and hmac.compare_digest(given, expected):
        return
    identity = await request.app[AUTH].authenticate(token)  # 401 for anything else
    request[IDENTITY] = identity  # the access log names the caller
    identity.require(Role.OWNER, "reading /metrics")


def metrics_token(settings: Settings) -> bytes | None:
    """The metrics token, from ``O16N_METRICS_TOKEN`` or the file ``_FILE`` names;
    ``SettingsError`` (the start stops) for both, an unreadable file or a short token."""
    secret = env_or_file_secret(
        settings.metrics_token, settings.metrics_token_file, "O16N_METRICS_TOKEN"
    )
    if secret is None:
        return None
    text = secret.get_secret_value()
    if settings.metrics_token_file is not None:  # the variable's value was checked at parse
        try:
            text = check_metrics_token(text.strip())
        except ValueError as exc:
            raise SettingsError(f"O16N_METRICS_TOKEN_FILE: {exc}") from None
    return text.encode("utf-8", "surrogatepass")


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's scrape-time collectors, while it runs."""
    live = LiveMetrics(app)
    app[LIVE] = live
    yield
    live.close()
