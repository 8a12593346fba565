"""The ``/sessions`` handlers (API.md §8): thin wrappers around ``SessionManager``."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import BodyPartReader, web

from controller.audit.trail import audited, created
from controller.auth.middleware import caller
from controller.auth.roles import Identity
from controller.errors import AgentProtocolError, BadRequestError
from controller.http.bodies import read_model
from controller.http.responses import json_response
from controller.http.streams import ResponseSink, body_chunks, download, spool, spool_dir
from controller.metrics.http import succeeded, timed_execute
from controller.runtime.blobs import FileSource
from controller.sessions.manager import SESSIONS
from controller.sessions.models import (
    CreateSessionRequest,
    ExecuteRequest,
    check_file_name,
    check_object_name,
)
from controller.settings import SETTINGS
from controller.timing import now, record

routes = web.RouteTableDef()

#: A snapshot a new session starts from: ``(caller, snapshot id)`` → its image and the path
#: of its tarball. ``create_app`` sets ``SnapshotManager.source``: snapshots sit above
#: sessions (they are taken of one), so sessions declare what they need, importing none of it.
SNAPSHOT_SOURCE = web.AppKey[Callable[[Identity, str], Awaitable[tuple[str, Path]]]](
    "snapshot_source"
)


@routes.post("/sessions")
@audited("session.create", target=created("sessionId"))
async def create_session(request: web.Request) -> web.Response:
    body = await read_model(request, CreateSessionRequest, allow_empty=True)
    identity = caller(request)
    snapshot = None
    if body.snapshotId is not None:  # read once the session quota allows a new session
        snapshot = functools.partial(request.app[SNAPSHOT_SOURCE], identity, body.snapshotId)
    session = await request.app[SESSIONS].create(identity, body.name, snapshot)
    session.snapshot_id = body.snapshotId
    return json_response({"sessionId": session.id}, status=201)


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    return json_response(await request.app[SESSIONS].listed(caller(request)))


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
    await request.app[SESSIONS].close(caller(request), session_id, force=True)
    return json_response(f"Session '{session_id}' closed by force.")


@routes.post("/sessions/{id}/execute")
@timed_execute
async def execute_code(request: web.Request) -> web.Response:
    body = await read_model(request, ExecuteRequest)
    result = await request.app[SESSIONS].execute(caller(request), request.match_info["id"], body)
    succeeded(request, bool(result.get("success", True)))
    started = now()
    response = json_response(result)
    record("encode", started)
    return response


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
    settings = request.app[SETTINGS]
    async with _read_upload(request, int(settings.max_body_bytes), spool_dir(settings)) as (
        name,
        body,
    ):
        await manager.call(identity, session_id, "file_put", {"name": name}, body)
    return web.Response(status=201, text=name, content_type="text/plain")


@contextlib.asynccontextmanager
async def _read_upload(
    request: web.Request, limit: int, directory: Path
) -> AsyncIterator[tuple[str, FileSource]]:
    """The ``file`` part of a multipart form: its (checked) file name and its content,
    spooled to disk as it arrives (never held in memory)."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequestError("upload the file as multipart/form-data with a part named 'file'")
    async with contextlib.AsyncExitStack() as stack:
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
            chunks = _part_chunks(part)
            body = await stack.enter_async_context(spool(chunks, directory, limit, "the file"))
        except (ValueError, AssertionError, aiohttp.ClientError) as exc:  # malformed multipart
            raise BadRequestError(f"the multipart/form-data body is malformed: {exc}") from None
        yield name, body


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(1 << 20):
        yield chunk


@routes.get("/sessions/{id}/files")
async def list_files(request: web.Request) -> web.Response:
    reply, _ = await request.app[SESSIONS].call(
        caller(request), request.match_info["id"], "files_list"
    )
    return json_response(_names(reply))


@routes.get("/sessions/{id}/files/{fileName}")
async def get_file(request: web.Request) -> web.StreamResponse:
    """The file streams from the agent to the client (its limit: the largest file a
    container may write)."""
    name = check_file_name(request.match_info["fileName"])
    settings = request.app[SETTINGS]
    sink = ResponseSink(request, filename=name)
    fetch = request.app[SESSIONS].call(
        caller(request),
        request.match_info["id"],
        "file_get",
        {"name": name},
        sink=sink,
        blob_limit=int(settings.container_fsize),
    )
    return await download(request, sink, fetch)


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
async def get_workspace_object(request: web.Request) -> web.StreamResponse:
    """The pickle streams from the agent to the client (its limit: the container's
    memory, where the agent made it)."""
    name = check_object_name(request.match_info["objectName"])
    settings = request.app[SETTINGS]
    sink = ResponseSink(request, filename=f"{name}.dill")
    fetch = request.app[SESSIONS].call(
        caller(request),
        request.match_info["id"],
        "workspace_get",
        {"name": name},
        sink=sink,
        blob_limit=int(settings.container_memory),
    )
    return await download(request, sink, fetch)


@routes.post("/sessions/{id}/workspace/{objectName}")
async def set_workspace_object(request: web.Request) -> web.Response:
    name = check_object_name(request.match_info["objectName"])
    manager, identity = request.app[SESSIONS], caller(request)
    session_id = request.match_info["id"]
    manager.get(identity, session_id)  # 404/410 before reading any of the body
    settings = request.app[SETTINGS]
    limit = int(settings.max_body_bytes)
    async with spool(body_chunks(request), spool_dir(settings), limit) as body:
        if not body.size:
            raise BadRequestError("the body must hold the object serialized with dill")
        await manager.call(identity, session_id, "workspace_set", {"name": name}, body)
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
