"""``/admin/users``: accounts (local ones, and directory users recorded at their first
login), their roles, logins, and what they own.

Changes take effect at once: the in-memory directory that checks every bearer token is
reloaded after each one, so a disabled user's (or one whose logins were ended) access
tokens stop working on the next request, not when they expire. No change may leave the
server without an enabled Owner (409). A directory user's password and role are the
directory's: changing them is 409 too.

Deleting a user closes their sessions and cancels their batches. Their services and
snapshots are never deleted with them: ``DELETE`` is 409 while they own any, unless
``?transferTo=<user>`` hands them over first (the same as
``POST /admin/users/{name}/transfer``).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.admin import batches as admin_batches
from controller.admin.common import iso, owner, query
from controller.audit.trail import audited, body_json, response_json
from controller.auth.passwords import generate_password, hash_password_async
from controller.auth.service import AUTH
from controller.errors import BadRequestError, ConflictError
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.reserved_names import refuse_reserved
from controller.roles import Role
from controller.services.registry import SERVICES
from controller.sessions.manager import SESSIONS
from controller.store.admin import AdminRepo, UserOverview
from controller.store.db import DB
from controller.store.users import refuse_directory_owned

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"


def _role(value: Any) -> Any:
    return Role.parse(value).value if isinstance(value, str) else value


class CreateUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    role: str = "Contributor"
    password: str | None = Field(None, min_length=8, max_length=1024)

    _check_role = field_validator("role", mode="before")(_role)


class ChangeUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)
    endLogins: bool = False

    _check_role = field_validator("role", mode="before")(_role)


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=64)


class DeleteQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transferTo: str | None = Field(None, min_length=1, max_length=64)


def user_json(user: UserOverview, sessions: int) -> dict[str, Any]:
    return {
        "name": user.username,
        "role": user.role.value,
        "source": user.source,
        "displayName": user.display_name,
        "email": user.email,
        "disabled": user.disabled,
        "created": iso(user.created_at),
        "lastLogin": iso(user.last_login_at),
        "sessions": sessions,
        "services": user.services,
        "snapshots": user.snapshots,
    }


def _open_sessions(request: web.Request) -> dict[int, int]:
    counts: dict[int, int] = {}
    for session in request.app[SESSIONS].everyone():
        if session.alive:
            counts[session.owner_id] = counts.get(session.owner_id, 0) + 1
    return counts


async def _one(request: web.Request, name: str) -> dict[str, Any]:
    user = await AdminRepo(request.app[DB]).user(name)
    return user_json(user, _open_sessions(request).get(user.id, 0))


async def _changes(request: web.Request) -> dict[str, Any]:
    """What a user change asked for, with the password reduced to whether one was set."""
    body = await body_json(request)
    if not isinstance(body, dict):
        return {}
    detail = {k: v for k, v in body.items() if k in ("role", "disabled", "endLogins", "to")}
    if body.get("password"):
        detail["password"] = "set"  # noqa: S105 (whether one was set, not what)
    return detail


async def _created(request: web.Request, response: web.StreamResponse | None) -> str:
    body = await response_json(response)
    if isinstance(body, dict) and isinstance(body.get("name"), str):
        return str(body["name"])
    raw = await body_json(request)
    return str(raw.get("name", "?")) if isinstance(raw, dict) else "?"


@routes.get("/admin/users")
async def list_users(request: web.Request) -> web.Response:
    owner(request)
    counts = _open_sessions(request)
    users = await AdminRepo(request.app[DB]).users()
    return json_response([user_json(u, counts.get(u.id, 0)) for u in users])


@routes.post("/admin/users")
@audited("user.create", target=_created, detail=_changes)
async def create_user(request: web.Request) -> web.Response:
    owner(request)
    body = await read_model(request, CreateUserRequest)
    refuse_reserved(body.name, "user name")
    generated = body.password is None
    password = generate_password() if body.password is None else body.password
    repo = request.app[AUTH].directory.users_repo
    await repo.add(body.name, await hash_password_async(password), Role(body.role))
    await request.app[AUTH].directory.reload()
    user = await _one(request, body.name)
    if generated:
        user["password"] = password  # shown this once; never stored or logged in clear
    return json_response(user, status=201)


@routes.get("/admin/users/{name}")
async def get_user(request: web.Request) -> web.Response:
    owner(request)
    return json_response(await _one(request, request.match_info["name"]))


@routes.patch("/admin/users/{name}")
@audited("user.change", detail=_changes)
async def change_user(request: web.Request) -> web.Response:
    owner(request)
    name = request.match_info["name"]
    body = await read_model(request, ChangeUserRequest)
    if body.role is None and body.disabled is None and body.password is None and not body.endLogins:
        raise BadRequestError("nothing to change: give role, disabled, password or endLogins")
    user = await AdminRepo(request.app[DB]).user(name)  # 404 first
    refuse_directory_owned(
        user.username, user.source, password=body.password is not None, role=body.role is not None
    )
    if body.endLogins and not body.disabled and user.source == "aad":
        # No login of ours to end: the provider's token stays good until it expires.
        raise ConflictError(
            f"'{user.username}' signs in with Azure AD access tokens, which stay valid until "
            "they expire: ending logins here would change nothing; disable the account to "
            "stop it now (and revoke the user's sessions in Azure AD)"
        )
    directory = request.app[AUTH].directory
    await directory.users_repo.update(
        name,
        role=Role(body.role) if body.role is not None else None,
        disabled=body.disabled,
        password_hash=await hash_password_async(body.password) if body.password else None,
        revoke_tokens=bool(body.disabled or body.password or body.endLogins),
        keep_an_owner=True,
    )
    await directory.reload()  # the user's live access tokens answer to the change now
    return json_response(await _one(request, name))


@routes.post("/admin/users/{name}/transfer")
@audited("user.transfer", detail=_changes)
async def transfer(request: web.Request) -> web.Response:
    owner(request)
    body = await read_model(request, TransferRequest)
    moved = await _transfer(request, request.match_info["name"], body.to)
    return json_response(moved)


async def _receiver(repo: AdminRepo, source: UserOverview, target: str) -> UserOverview:
    """The user ``target`` who may take over ``source``'s work (404, 400 or 409 if not)."""
    new = await repo.user(target)
    if source.id == new.id:
        raise BadRequestError("'to' names the same user")
    if new.disabled:
        raise ConflictError(f"'{target}' is disabled; enable the account first")
    return new


async def _transfer(request: web.Request, source: str, target: str) -> dict[str, Any]:
    """Hand ``source``'s services and snapshots to ``target``, in the store and in memory."""
    repo = AdminRepo(request.app[DB])
    old = await repo.user(source)
    new = await _receiver(repo, old, target)
    services, snapshots = await repo.transfer(old.id, new.id)
    try:
        await request.app[SERVICES].refresh()  # the new owner and revision of each
    except Exception:  # done all the same: the watch reads the store within a second
        log.exception("catalogue refresh after a handover failed")
    return {"from": source, "to": target, "services": services, "snapshots": snapshots}


@routes.delete("/admin/users/{name}")
@audited("user.delete")
async def delete_user(request: web.Request) -> web.Response:
    owner(request)
    name = request.match_info["name"]
    params = query(request, DeleteQuery)
    repo = AdminRepo(request.app[DB])
    user = await repo.user(name)
    if await repo.enabled_owners() == [user.username]:  # checked again as it is deleted
        raise ConflictError("that would leave no enabled Owner; make another user an Owner first")
    if params.transferTo is not None:
        await _receiver(repo, user, params.transferTo)  # 404/409 before anything changes
    elif user.services or user.snapshots:
        raise ConflictError(
            f"'{name}' owns {user.services} service versions and {user.snapshots} snapshots; "
            f"hand them over first (POST /admin/users/{name}/transfer, or DELETE with "
            "?transferTo=<user>)"
        )
    # Their logins end first, so that nothing new of theirs starts while their sessions
    # close and their work is handed over (the delete itself rechecks what they own).
    directory = request.app[AUTH].directory
    await directory.users_repo.update(name, disabled=True, revoke_tokens=True, keep_an_owner=True)
    await directory.reload()
    moved = None
    if params.transferTo is not None:
        moved = await _transfer(request, name, params.transferTo)
    sessions = request.app[SESSIONS]
    closed = 0
    for session in sessions.everyone():
        if session.owner_id == user.id and session.alive:
            await sessions.close_by_admin(session.id)
            closed += 1
    cancelled = await admin_batches.cancel_owned(request.app, user.id)
    await directory.users_repo.delete(name)
    await directory.reload()
    return json_response(
        {"deleted": name, "sessionsClosed": closed, "batchesCancelled": cancelled, "moved": moved}
    )
