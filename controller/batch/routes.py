"""The ``/api/{name}/{version}/batch`` handlers (API.md §7)."""

from __future__ import annotations

import base64
import re

from aiohttp import web

from controller.auth.middleware import caller
from controller.batch.runner import BATCHES, status_json
from controller.errors import BadRequestError, NotFoundError
from controller.http.bodies import read_json
from controller.http.responses import json_response
from controller.services.registry import SERVICES, Service

routes = web.RouteTableDef()

BASE = "/api/{name}/{version}/batch"


async def _service(request: web.Request) -> Service:
    return await request.app[SERVICES].find(
        request.match_info["name"], request.match_info["version"]
    )


def _flag(request: web.Request) -> bool:
    """``showPartialResults`` (swagger) or ``showPartialResult`` (the SDK); default true."""
    raw = request.query.get("showPartialResults", request.query.get("showPartialResult"))
    return raw is None or raw.lower() not in ("false", "0", "no")


def _index(request: web.Request) -> int:
    raw = request.match_info["index"]
    if not raw.isdigit():
        raise BadRequestError(f"the record index must be a non-negative integer, not {raw[:20]!r}")
    return int(raw)


@routes.post(BASE)
async def start_batch(request: web.Request) -> web.Response:
    runner = request.app[BATCHES]
    service = await _service(request)
    parallel = runner.parallel_count(request.query.get("parallelCount"))
    record = await runner.start(caller(request), service, await read_json(request), parallel)
    return json_response({"batchExecutionId": record.id, "BatchExecutionId": record.id}, status=202)


@routes.get(BASE)
async def list_batches(request: web.Request) -> web.Response:
    return json_response(await request.app[BATCHES].ids(caller(request), await _service(request)))


@routes.get(BASE + "/{executionId}")
async def batch_status(request: web.Request) -> web.Response:
    runner = request.app[BATCHES]
    record = await runner.get(
        caller(request), await _service(request), request.match_info["executionId"]
    )
    show = _flag(request) or record.state == "Complete"
    results = await runner.results(record) if show else None
    return json_response(status_json(record, results))


@routes.delete(BASE + "/{executionId}")
async def cancel_batch(request: web.Request) -> web.Response:
    execution_id = request.match_info["executionId"]
    await request.app[BATCHES].cancel(caller(request), await _service(request), execution_id)
    return json_response([execution_id])


@routes.get(BASE + "/{executionId}/{index}/files")
async def batch_files(request: web.Request) -> web.Response:
    runner = request.app[BATCHES]
    record = await runner.get(
        caller(request), await _service(request), request.match_info["executionId"]
    )
    result = await runner.result(record, _index(request))
    files = (result or {}).get("outputFiles") or {}
    return json_response([name for name, data in files.items() if data is not None])


@routes.get(BASE + "/{executionId}/{index}/files/{fileName}")
async def batch_file(request: web.Request) -> web.StreamResponse:
    """The file is decoded and sent piece by piece: only its base64 text is read from
    the database, never the record's whole result or a decoded copy."""
    runner = request.app[BATCHES]
    record = await runner.get(
        caller(request), await _service(request), request.match_info["executionId"]
    )
    name = request.match_info["fileName"]
    data = await runner.result_file(record, _index(request), name)
    if data is None:
        raise NotFoundError(f"record {_index(request)} of '{record.id}' has no file {name[:100]!r}")
    clean = data
    if len(clean) % 4 or not _BASE64.fullmatch(clean):
        raise NotFoundError(f"file {name[:100]!r} is not readable")
    size = len(clean) // 4 * 3 - clean[-2:].count("=")
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    for start in range(0, len(clean), DECODE_PIECE):
        await response.write(base64.b64decode(clean[start : start + DECODE_PIECE]))
    await response.write_eof()
    return response


#: base64 characters decoded at a time (a multiple of 4)
DECODE_PIECE = 1 << 20
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
