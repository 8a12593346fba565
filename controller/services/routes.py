"""Handlers of ``/services`` (management), ``/api/{name}/{version}`` (consumption), service
pools, and ``/realtime-services`` (a model, no code)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from controller.audit.trail import audited, code_digest, service_target
from controller.auth.middleware import caller
from controller.errors import PayloadTooLargeError
from controller.http.bodies import read_json, read_model
from controller.http.responses import json_response
from controller.http.streams import spool_dir
from controller.metrics.http import succeeded
from controller.reserved_names import refuse_reserved, reserved
from controller.runtime.agent_link import AGENT_REQUEST_MAX
from controller.services import consume
from controller.services.metered import timed_consume
from controller.services.models import PoolRequest, PublishWebServiceRequest
from controller.services.realtime.upload import read_form
from controller.services.registry import SERVICES
from controller.services.shape import to_json
from controller.settings import SETTINGS
from controller.timing import now, record

routes = web.RouteTableDef()

COMPUTE_NODE = "local-docker"
#: the largest consume body (parsed, it takes about ten times its bytes); its inputs must
#: also fit in one message to the container (``consume.check_size``)
CONSUME_BODY_MAX = AGENT_REQUEST_MAX // 2


# --- management -----------------------------------------------------------------------------


@routes.get("/services")
async def list_services(request: web.Request) -> web.Response:
    registry, who = request.app[SERVICES], caller(request)
    listed = [
        s for s in await registry.all_now() if not reserved(s.record.name)
    ]  # diagnostics' own
    return json_response([to_json(s, who) for s in listed])


@routes.get("/services/{name}")
async def list_service_versions(request: web.Request) -> web.Response:
    registry, who = request.app[SERVICES], caller(request)
    versions = await registry.versions_now(request.match_info["name"])
    return json_response([to_json(s, who) for s in versions])


@routes.get("/services/{name}/{version}")
async def get_service_version(request: web.Request) -> web.Response:
    registry = request.app[SERVICES]
    service = await registry.find(request.match_info["name"], request.match_info["version"])
    return json_response([to_json(service, caller(request))])


@routes.post("/services/{name}")
@audited("service.publish", target=service_target, detail=code_digest)
async def publish_service(request: web.Request) -> web.Response:
    refuse_reserved(request.match_info["name"], "service name")
    body = await read_model(request, PublishWebServiceRequest)
    service = await request.app[SERVICES].publish(
        caller(request), request.match_info["name"], None, body
    )
    return json_response(f"/api/{service.record.name}/{service.record.version}", status=201)


@routes.post("/services/{name}/{version}")
@audited("service.publish", target=service_target, detail=code_digest)
async def publish_service_version(request: web.Request) -> web.Response:
    refuse_reserved(request.match_info["name"], "service name")
    body = await read_model(request, PublishWebServiceRequest)
    service = await request.app[SERVICES].publish(
        caller(request), request.match_info["name"], request.match_info["version"], body
    )
    return json_response(f"/api/{service.record.name}/{service.record.version}", status=201)


@routes.patch("/services/{name}/{version}")
@audited("service.patch", target=service_target, detail=code_digest)
async def patch_service_version(request: web.Request) -> web.Response:
    body = await read_model(request, PublishWebServiceRequest)
    service = await request.app[SERVICES].patch(
        caller(request), request.match_info["name"], request.match_info["version"], body
    )
    return json_response(f"/api/{service.record.name}/{service.record.version}")


@routes.delete("/services/{name}/{version}")
@audited("service.delete")
async def delete_service_version(request: web.Request) -> web.Response:
    name, version = request.match_info["name"], request.match_info["version"]
    await request.app[SERVICES].delete(caller(request), name, version)
    return json_response(f"Web service '{name}' version '{version}' deleted.")


# --- pools ------------------------------------------------------------------------------------


@routes.post("/services/{name}/{version}/pool")
@audited("service.pool.set")
async def create_or_update_pool(request: web.Request) -> web.Response:
    body = await read_model(request, PoolRequest, allow_empty=True)
    await request.app[SERVICES].set_pool(
        caller(request),
        request.match_info["name"],
        request.match_info["version"],
        body.InitialPoolSize,
        body.MaxPoolSize,
    )
    return json_response("Created.")


@routes.get("/services/{name}/{version}/pool")
async def get_pool_status(request: web.Request) -> web.Response:
    """One item per compute node holding the pool's containers (ML Server's shape), named
    by the node's name (its address is the Owner's, in ``/admin/nodes``), with that node's
    ``ready`` and ``busy``; ``initialPoolSize``, ``maxPoolSize`` and ``queued`` are the
    whole pool's, in every item."""
    service = await request.app[SERVICES].find(
        request.match_info["name"], request.match_info["version"]
    )
    pool = service.pool
    places = pool.by_place() or {"": (0, 0)}
    return json_response(
        [
            {
                "computeNodeEndpoint": place or COMPUTE_NODE,
                "status": pool.status,
                "initialPoolSize": pool.initial,
                "maxPoolSize": pool.maximum,
                "ready": ready,
                "busy": busy,
                "queued": pool.queued,
            }
            for place, (ready, busy) in sorted(places.items())
        ]
    )


@routes.delete("/services/{name}/{version}/pool")
@audited("service.pool.delete")
async def delete_pool(request: web.Request) -> web.Response:
    await request.app[SERVICES].delete_pool(
        caller(request), request.match_info["name"], request.match_info["version"]
    )
    return json_response("Deleted.")


# --- consumption ------------------------------------------------------------------------------


@routes.post("/api/{name}/{version}")
@timed_consume
async def consume_service(request: web.Request) -> web.Response:
    app = request.app
    service = await app[SERVICES].find(request.match_info["name"], request.match_info["version"])
    size = len(await request.read())
    if size > CONSUME_BODY_MAX:
        raise PayloadTooLargeError(
            f"a consume request's body may take at most {CONSUME_BODY_MAX} bytes: "
            "send fewer rows per request"
        )
    inputs = consume.check_inputs(service, await read_json(request))
    consume.check_size(inputs, size)
    result = await consume.run(service, inputs, app[SETTINGS].consume_timeout)
    succeeded(request, result["success"])
    started = now()
    response = json_response(result)
    record("encode", started)
    return response


@routes.get("/api/{name}/{version}/swagger.json")
async def service_swagger(request: web.Request) -> web.Response:
    service = await request.app[SERVICES].find(
        request.match_info["name"], request.match_info["version"]
    )
    return json_response(service.document)


# --- realtime ---------------------------------------------------------------------------------


#: the SHA-256 of the model a realtime publish or patch received, for its audit record
_MODEL_SHA256 = web.RequestKey("o16n_model_sha256", str)


async def model_detail(request: web.Request) -> dict[str, Any]:
    digest = request.get(_MODEL_SHA256)
    return {"modelSha256": digest} if digest else {}


async def _realtime(request: web.Request, version: str | None) -> web.Response:
    """Publish the form's model as ``name``/``version`` (a new GUID when ``None``)."""
    name = request.match_info["name"]
    refuse_reserved(name, "service name")
    settings, registry, who = request.app[SETTINGS], request.app[SERVICES], caller(request)
    await registry.check_realtime(who, name, version)
    limit = int(settings.realtime_model_max)
    async with read_form(request, limit, spool_dir(settings)) as form:
        if form.sha256 is not None:
            request[_MODEL_SHA256] = form.sha256
        service = await registry.publish_realtime(who, name, version, form)
    return json_response(f"/api/{service.record.name}/{service.record.version}", status=201)


@routes.post("/realtime-services/{name}")
@audited("service.publish", target=service_target, detail=model_detail)
async def publish_realtime(request: web.Request) -> web.Response:
    return await _realtime(request, None)


@routes.post("/realtime-services/{name}/{version}")
@audited("service.publish", target=service_target, detail=model_detail)
async def publish_realtime_version(request: web.Request) -> web.Response:
    return await _realtime(request, request.match_info["version"])


@routes.patch("/realtime-services/{name}/{version}")
@audited("service.patch", target=service_target, detail=model_detail)
async def patch_realtime_version(request: web.Request) -> web.Response:
    name, version = request.match_info["name"], request.match_info["version"]
    settings, registry, who = request.app[SETTINGS], request.app[SERVICES], caller(request)
    await registry.check_realtime(who, name, version, patch=True)
    limit = int(settings.realtime_model_max)
    async with read_form(request, limit, spool_dir(settings)) as form:
        if form.sha256 is not None:
            request[_MODEL_SHA256] = form.sha256
        service = await registry.patch_realtime(who, name, version, form)
    return json_response(f"/api/{service.record.name}/{service.record.version}")
