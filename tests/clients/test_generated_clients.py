"""Clients generated from the Swagger documents: a bravado client built at run time from
o16n's core document drives login → session → execute → snapshot → publish, and one built
from the per-service document consumes the service. bravado validates every request and
response against the documents, so a lie in either fails here."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient
from bravado.client import SwaggerClient
from bravado.requests_client import RequestsClient
from swagger_spec_validator.validator20 import validate_spec

from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.docker

CORE = Path(__file__).resolve().parents[2] / "swagger" / "o16n-swagger.json"
CONFIG = {
    "use_models": False,
    "validate_responses": True,
    "validate_requests": True,
    "also_return_response": False,
}


def client_for(spec: dict[str, Any], base: str, token: str | None = None) -> Any:
    http = RequestsClient()
    if token is not None:
        host = base.split("://", 1)[1].split("/", 1)[0]  # bravado matches host:port
        http.set_api_key(host, f"Bearer {token}", param_name="Authorization", param_in="header")
    return SwaggerClient.from_spec(spec, origin_url=base, http_client=http, config=CONFIG)


def drive(base: str) -> dict[str, Any]:
    spec = json.loads(CORE.read_text())  # bravado annotates the dict: a fresh one each time
    anonymous = client_for(spec, base)
    auth = getattr(anonymous, "Authentication APIs")
    tokens = auth.login(loginRequest={"username": "admin", "password": ADMIN_PASSWORD}).result()
    api = client_for(spec, base, tokens["access_token"])
    sessions = getattr(api, "Session APIs")
    snapshots = getattr(api, "Snapshot APIs")
    services = getattr(api, "Services Management APIs")
    consumption = getattr(api, "Service Consumption APIs")

    status = getattr(api, "Status APIs").status().result()
    session_id = sessions.createSession(
        createSessionRequest={"name": "generated", "runtimeType": "Python"}
    ).result()["sessionId"]
    executed = sessions.executeCode(
        id=session_id,
        executeRequest={
            "code": "weights = [w * factor for w in (1, 2, 3)]",
            "inputParameters": [{"name": "factor", "value": 2}],
            "outputParameters": ["weights"],
        },
    ).result()
    snapshot_id = snapshots.CreateSnapshot(
        id=session_id, createSnapshotRequest={"name": "generated"}
    ).result()["snapshotId"]
    listed = snapshots.ListSnapshots().result()
    published = services.publishWebServiceVersion(
        name="Generated",
        version="1",
        publishRequest={
            "code": "score = sum(w * x for w in weights)",
            "inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
            "outputParameterDefinitions": [{"name": "score", "type": "numeric"}],
            "runtimeType": "Python",
            "snapshotId": snapshot_id,
            "operationId": "score",
        },
    ).result()
    described = services.getWebServiceVersion(name="Generated", version="1").result()
    # the seed fetches the per-service document with plain requests, so do we
    service_doc = requests.get(
        f"{base}/api/Generated/1/swagger.json",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=30,
    ).json()
    validate_spec(copy.deepcopy(service_doc))  # the validator annotates what it is given
    generic = consumption.ConsumeWebService(
        name="Generated", version="1", WebServiceParameters={"x": 1.0}
    ).result()

    per_service = client_for(service_doc, base, tokens["access_token"])
    consumed = per_service.Generated.score(WebServiceParameters={"x": 2.0}).result()
    sessions.closeSession(id=session_id).result()
    return {
        "status": status["statusCode"],
        "executed": executed,
        "listed": listed,
        "published": published,
        "described": described,
        "generic": generic,
        "consumed": consumed,
    }


async def test_generated_clients_drive_the_workflow(client: TestClient[Any, Any]) -> None:
    base = str(client.make_url("/")).rstrip("/")
    out = await asyncio.to_thread(drive, base)
    assert out["status"] in ("pass", "warn")
    assert out["executed"]["success"] and out["executed"]["outputParameters"] == [
        {"name": "weights", "value": [2, 4, 6]}
    ]
    assert [s["name"] for s in out["listed"]] == ["generated"]
    assert out["published"] == "/api/Generated/1"
    assert out["described"][0]["operationId"] == "score"
    assert out["generic"]["outputParameters"] == {"score": 12.0}
    assert out["consumed"]["success"] and out["consumed"]["outputParameters"] == {"score": 24.0}
