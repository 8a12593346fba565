"""``/login`` handlers (API.md §3): the only routes reachable without a bearer token."""

from __future__ import annotations

import hashlib

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.audit.trail import audited, login_name, login_target
from controller.auth.service import AUTH
from controller.errors import BadRequestError
from controller.http.bodies import read_model
from controller.http.body_limits import expect_small_body
from controller.http.client_address import request_address
from controller.http.public import public
from controller.http.responses import json_response
from controller.settings import SETTINGS

routes = web.RouteTableDef()

#: OWASP's device cookie: proof that this client logged in as the user before, which spares
#: it the lockouts others' failures cause (see ``controller.auth.throttle``).
#: One cookie per user name, so that the users of one client do not replace each other's.
DEVICE_COOKIE_MAX_AGE = 180 * 86400


def _device_cookie_name(username: str) -> str:
    digest = hashlib.sha256(username.lower().encode("utf-8", "surrogatepass")).hexdigest()
    return f"o16n_device_{digest[:16]}"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class RenewTokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    refreshToken: str = Field(min_length=1, max_length=512)


@routes.post("/login", expect_handler=expect_small_body)
@public
@audited("login", target=login_target, actor=login_name)
async def login(request: web.Request) -> web.Response:
    body = await read_model(request, LoginRequest)
    settings = request.app[SETTINGS]
    address = request_address(request, settings.trusted_networks)
    cookie = _device_cookie_name(body.username)
    pair = await request.app[AUTH].login(
        body.username, body.password, address, request.cookies.get(cookie)
    )
    response = json_response(pair.to_json())
    if pair.device_cookie is not None:
        response.set_cookie(
            cookie,
            pair.device_cookie,
            max_age=DEVICE_COOKIE_MAX_AGE,
            path="/login",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
    return response


@routes.post("/login/refreshToken", expect_handler=expect_small_body)
@public
async def renew_token(request: web.Request) -> web.Response:
    body = await read_model(request, RenewTokenRequest)
    pair = await request.app[AUTH].refresh(body.refreshToken)
    return json_response(pair.to_json())


@routes.delete("/login/refreshToken")
@public
async def revoke_refresh_token(request: web.Request) -> web.Response:
    token = request.query.get("refreshToken") or request.query.get("refreshtoken")
    if not token:
        raise BadRequestError("the query parameter 'refreshToken' is required")
    await request.app[AUTH].revoke(token)
    return json_response({})


@routes.delete("/login/refreshToken/{refreshToken}")
@public
async def revoke_refresh_token_path(request: web.Request) -> web.Response:
    """The 9.1 form of revocation, with the token in the path."""
    await request.app[AUTH].revoke(request.match_info["refreshToken"])
    return json_response({})
