"""``/login`` handlers (API.md §3): the only routes reachable without a bearer token."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from controller.auth.middleware import public
from controller.errors import BadRequestError
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.keys import AUTH

routes = web.RouteTableDef()


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class RenewTokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    refreshToken: str = Field(min_length=1, max_length=512)


@routes.post("/login")
@public
async def login(request: web.Request) -> web.Response:
    body = await read_model(request, LoginRequest)
    pair = await request.app[AUTH].login(body.username, body.password, request.remote or "?")
    return json_response(pair.to_json())


@routes.post("/login/refreshToken")
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
