"""A service's JSON shape: what ``GET /services`` answers, and the parameter definitions a
publish stores."""

from __future__ import annotations

from typing import Any

from o16n_agent.codec import canonical_type

from controller.auth.roles import Identity
from controller.services import access
from controller.services.catalogue import Service
from controller.store.services import ServiceRecord


def to_json(service: Service, caller: Identity) -> dict[str, Any]:
    """The 9.x ``WebService`` of ``service`` as ``caller`` may see it (code only for those
    who may see it)."""
    r = service.record
    see_code = access.can_see_code(caller, r)
    return {
        "name": r.name,
        "version": r.version,
        "versionPublishedBy": r.publisher_name,
        "creationTime": r.creation_time,
        "snapshotId": r.snapshot_id,
        "runtimeType": r.runtime,
        "initCode": r.init_code if see_code else None,
        "code": r.code if see_code else None,
        "description": r.description,
        "operationId": r.operation_id,
        "inputParameterDefinitions": r.inputs,
        "outputParameterDefinitions": r.outputs,
        "outputFileNames": r.output_files,
        "myPermissionOnService": "read/write" if access.can_manage(caller, r) else "read only",
    }


def definitions(params: Any) -> list[dict[str, str]]:
    """Parameter definitions as stored: name and declared type."""
    return [{"name": p.name, "type": p.type} for p in params or []]


def inputs(record: ServiceRecord) -> list[tuple[str, str, str]]:
    """Each input's name, the kind its value is checked as, and its declared type."""
    return [(p["name"], _kind(p["type"]), p["type"]) for p in record.inputs]


def _kind(declared: str) -> str:
    return canonical_type(declared) or "character"
