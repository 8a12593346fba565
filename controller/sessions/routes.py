"""The ``/sessions`` handlers (API.md §8): thin wrappers around ``SessionManager``."""

from __future__ import annotations

import functools
from urllib.parse import quote

import aiohttp
from aiohttp import BodyPartReader, web

from controller.admin.trail import audited, created
from controller.auth.middleware import caller
from controller.errors import AgentProtocolError, BadRequestError, PayloadTooLargeError
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.keys import SESSIONS, SETTINGS, SNAPSHOTS
from controller.sessions.models import (
    CreateSessionRequest,
    ExecuteRequest,
    check_file_name,
    check_object_name,
)

routes = web.RouteTableDef()


def _octets(data: bytes, filename: str | None = None) -> web.Response:
    headers = {}
    if filename is not None:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{_quote(filename)}"
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


def _quote(name: str) -> str:
    return quote(name, safe="")


@routes.post("/sessions")
@audited("session.create", target=created("sessionId"))
async def create_session(request: web.Request) -> web.Response:
    body = await read_model(request, CreateSessionRequest, allow_empty=True)
    identity = caller(request)
    snapshot = None
    if body.snapshotId is not None:  # read once the session quota allows a new session
        snapshot = functools.partial(request.app[SNAPSHOTS].source, identity, body.snapshotId)
    session = await request.app[SESSIONS].create(identity, body.name, snapshot)
    session.snapshot_id = body.snapshotId
    return json_response({"sessionId": session.id}, status=201)


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS].owned_by(caller(request))
    return json_response([s.to_json() for s in sessions])


@routes.delete("/sessions/{id}")
@audited("session.close")
async def close_session(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    await request.app[SESSIONS].close(caller(request), session_id)
    return json_response(f"Session '{session_id}' closed.")


@routes.delete("/sessions/{id}/force")
@audited("session.close")
async def close_session_by_force(request: web.Request) -> web.Response:
    session_id = request.match_info["id"]
    await request.app[SESSIONS].close(caller(request), session_id)
    return json_response(f"Session '{session_id}' closed by force.")


@routes.post("/sessions/{id}/execute")
async def execute_code(request: web.Request) -> web.Response:
    body = await read_model(request, ExecuteRequest)
    result = await request.app[SESSIONS].execute(caller(request), request.match_info["id"], body)
    return json_response(result)


@routes.post("/sessions/{id}/cancel")
async def cancel_session(request: web.Request) -> web.Response:
    running = await request.app[SESSIONS].cancel(caller(request), request.match_info["id"])
    return json_response("Execution interrupted." if running else "Nothing was running.")


@routes.get("/sessions/{id}/console-output")
async def console_output(request: web.Request) -> web.Response:
    text = request.app[SESSIONS].console(caller(request), request.match_info["id"])
    return json_response({"consoleOutput": text})


@routes.get("/sessions/{id}/history")
async def session_history(request: web.Request) -> web.Response:
    history = await request.app[SESSIONS].history(caller(request), request.match_info["id"])
    return json_response(history)


# --- working-directory files ---------------------------------------------------------------


@routes.post("/sessions/{id}/files")
async def upload_file(request: web.Request) -> web.Response:
    manager, identity = request.app[SESSIONS], caller(request)
    session_id = request.match_info["id"]
    manager.get(identity, session_id)  # 404/410 before reading any of the body
    name, data = await _read_upload(request, int(request.app[SETTINGS].max_body_bytes))
    await manager.call(identity, session_id, "file_put", {"name": name}, data)
    return web.Response(status=201, text=name, content_type="text/plain")


async def _read_upload(request: web.Request, limit: int) -> tuple[str, bytes]:
    """The ``file`` part of a multipart form: its (checked) file name and content."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequestError("upload the file as multipart/form-data with a part named 'file'")
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                raise BadRequestError("the form has no part named 'file'")
            if isinstance(part, BodyPartReader) and part.name == "file":
                break
        if not part.filename:
            raise BadRequestError("the 'file' part has no filename")
        name = check_file_name(part.filename)
        data = bytearray()
        while chunk := await part.read_chunk(1 << 20):
            data += chunk
            if len(data) > limit:
                raise PayloadTooLargeError(f"the file is larger than the limit of {limit} bytes")
    except (ValueError, AssertionError, aiohttp.ClientError) as exc:  # malformed multipart
        raise BadRequestError(f"the multipart/form-data body is malformed: {exc}") from None
    return name, bytes(data)


@routes.get("/sessions/{id}/files")
async def list_files(request: web.Request) -> web.Response:
    reply, _ = await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "files_list"
    )
    return json_response(_names(reply))


@routes.get("/sessions/{id}/files/{fileName}")
async def get_file(request: web.Request) -> web.Response:
    name = check_file_name(request.match_info["fileName"])
    _, data = await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "file_get", {"name": name}
    )
    return _octets(data or b"", filename=name)


@routes.delete("/sessions/{id}/files/{fileName}")
async def delete_file(request: web.Request) -> web.Response:
    name = check_file_name(request.match_info["fileName"])
    await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "file_delete", {"name": name}
    )
    return json_response(f"File '{name}' deleted.")


# --- workspace objects ---------------------------------------------------------------------


@routes.get("/sessions/{id}/workspace")
async def list_workspace(request: web.Request) -> web.Response:
    reply, _ = await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "workspace_list"
    )
    return json_response(_names(reply))


@routes.get("/sessions/{id}/workspace/{objectName}")
async def get_workspace_object(request: web.Request) -> web.Response:
    name = check_object_name(request.match_info["objectName"])
    _, data = await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "workspace_get", {"name": name}
    )
    return _octets(data or b"", filename=f"{name}.dill")


@routes.post("/sessions/{id}/workspace/{objectName}")
async def set_workspace_object(request: web.Request) -> web.Response:
    name = check_object_name(request.match_info["objectName"])
    data = await request.read()
    if not data:
        raise BadRequestError("the body must hold the object serialized with dill")
    await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "workspace_set", {"name": name}, data
    )
    return web.Response(status=200)


@routes.delete("/sessions/{id}/workspace/{objectName}")
async def delete_workspace_object(request: web.Request) -> web.Response:
    name = check_object_name(request.match_info["objectName"])
    await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "workspace_delete", {"name": name}
    )
    return json_response(f"Object '{name}' deleted.")


def _names(reply: dict[str, object]) -> list[str]:
    """A list of names from an agent reply, checked (the agent is untrusted)."""
    names = reply.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise AgentProtocolError("the session's agent sent a malformed list")
    return names
