"""Publishing realtime services (API.md §5.12): a pickled scikit-learn model or an ONNX file
in the SDK's multipart form, the service it makes, patches, roles, deletion, and every
refusal a 400 (413) that says why and leaves nothing behind. On the engine of the run."""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from controller.settings import Settings
from tests.admin.conftest import audit_entries
from tests.conftest import make_settings, user_headers
from tests.realtime.conftest import (
    FEATURES,
    OUTPUTS,
    array_logistic,
    form,
    frame_body,
    iris,
    leftovers,
    logistic,
    onnx_graph,
    onnx_logistic,
    pickled_logistic,
    publish_model,
    running,
)
from tests.services.conftest import consume, publish

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: the most a refused model in these tests takes, and a bound that leaves room for them
MODEL_MAX = 256 * 1024


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """Containers on demand only: each is an interpreter with onnxruntime loaded, and most
    services here are never consumed. Containers are counted by kind, and one taken from
    the services' warm pool keeps its warm labels on Docker: no such pool here."""
    return make_settings(
        data_dir,
        service_pool_initial=0,
        service_warm_pool_size=0,
        realtime_model_max=MODEL_MAX,
    )


async def get_service(
    client: TestClient[Any, Any], headers: dict[str, str], name: str, version: str
) -> dict[str, Any]:
    resp = await client.get(f"/services/{name}/{version}", headers=headers)
    assert resp.status == 200, await resp.text()
    [service] = await resp.json()
    return service  # type: ignore[no-any-return]


async def probabilities(
    client: TestClient[Any, Any], headers: dict[str, str], name: str, version: str
) -> np.ndarray:
    """The model's probabilities for every iris row, consumed with the features' names."""
    frame, _ = iris()
    result = await consume(client, headers, name, version, frame_body(frame))
    assert result["success"], result
    out = result["outputParameters"]["outputData"]
    return np.array([out[c] for c in OUTPUTS[1:]]).T


async def test_a_pickled_model_is_a_service_named_after_its_features(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    model = pickled_logistic()
    path = await publish_model(
        client,
        admin_headers,
        "Iris",
        "1.0",
        model,
        description="iris species",
        operationId="classify",
    )
    assert path == "/api/Iris/1.0"
    service = await get_service(client, admin_headers, "Iris", "1.0")
    assert service["runtimeType"] == "Realtime"
    assert service["inputParameterDefinitions"] == [{"name": "inputData", "type": "data.frame"}]
    assert service["outputParameterDefinitions"] == [{"name": "outputData", "type": "data.frame"}]
    assert service["description"] == "iris species" and service["operationId"] == "classify"
    assert service["versionPublishedBy"] == "admin"
    assert service["myPermissionOnService"] == "read/write"
    listed = await (await client.get("/services", headers=admin_headers)).json()
    assert [(s["name"], s["version"], s["runtimeType"]) for s in listed] == [
        ("Iris", "1.0", "Realtime")
    ]
    document = await (await client.get("/api/Iris/1.0/swagger.json", headers=admin_headers)).json()
    assert list(document["definitions"]["InputData"]["properties"]) == FEATURES
    assert list(document["definitions"]["OutputData"]["properties"]) == OUTPUTS
    assert document["paths"]["/api/Iris/1.0"]["post"]["operationId"] == "classify"
    frame, _ = iris()
    expected = logistic().predict_proba(frame)
    np.testing.assert_allclose(
        await probabilities(client, admin_headers, "Iris", "1.0"), expected, atol=1e-5
    )
    [first_file] = leftovers(settings)["models"]
    [entry] = await audit_entries(client, action="service.publish")
    assert entry.target == "Iris/1.0" and entry.outcome == "ok"
    assert entry.detail["modelSha256"] == hashlib.sha256(model).hexdigest()

    # the same version again: 409 (checked before the model is)
    await publish_model(client, admin_headers, "Iris", "1.0", model, expect=409)
    # no version: a GUID (an ONNX model this time: no conversion, quicker)
    path = await publish_model(client, admin_headers, "Iris", None, onnx_logistic())
    generated = path.rsplit("/", 1)[1]
    assert GUID.match(generated) and path == f"/api/Iris/{generated}"
    versions = await (await client.get("/services/Iris", headers=admin_headers)).json()
    assert [v["version"] for v in versions] == ["1.0", generated]
    [generated_file] = set(leftovers(settings)["models"]) - {first_file}

    # a description alone: the model and its containers stay
    serving = await running(client)
    assert len(serving) == 1
    resp = await client.patch(
        "/realtime-services/Iris/1.0",
        data=form(None, description="setosa, versicolor, virginica"),
        headers=admin_headers,
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == "/api/Iris/1.0"
    service = await get_service(client, admin_headers, "Iris", "1.0")
    assert service["description"] == "setosa, versicolor, virginica"
    assert service["operationId"] == "classify"
    np.testing.assert_allclose(
        await probabilities(client, admin_headers, "Iris", "1.0"), expected, atol=1e-5
    )
    assert await running(client) == serving
    # a new model: new predictions from new containers, the old model's file gone
    other = pickled_logistic(0.01)
    path = await publish_model(client, admin_headers, "Iris", "1.0", other, patch=True)
    assert path == "/api/Iris/1.0"
    np.testing.assert_allclose(
        await probabilities(client, admin_headers, "Iris", "1.0"),
        logistic(0.01).predict_proba(frame),
        atol=1e-5,
    )
    assert not np.allclose(logistic(0.01).predict_proba(frame), expected, atol=1e-2)
    assert len(await running(client)) == 1 and not serving & await running(client)
    assert first_file not in leftovers(settings)["models"]
    patched, described = await audit_entries(client, action="service.patch")  # newest first
    assert patched.detail["modelSha256"] == hashlib.sha256(other).hexdigest()
    assert "modelSha256" not in described.detail
    assert (await get_service(client, admin_headers, "Iris", "1.0"))["description"] == (
        "setosa, versicolor, virginica"
    )

    # code is not a realtime service's to change
    resp = await client.patch("/services/Iris/1.0", json={"code": "y = 1"}, headers=admin_headers)
    assert resp.status == 400
    assert "/realtime-services/Iris/1.0" in (await resp.json())["message"]
    resp = await client.patch(
        "/services/Iris/1.0", json={"description": "via /services"}, headers=admin_headers
    )
    assert resp.status == 200

    # deleted through /services, with its model's file
    assert len(leftovers(settings)["models"]) == 2
    resp = await client.delete("/services/Iris/1.0", headers=admin_headers)
    assert resp.status == 200
    assert (await client.get("/services/Iris/1.0", headers=admin_headers)).status == 404
    await consume(client, admin_headers, "Iris", "1.0", frame_body(frame), expect=404)
    assert leftovers(settings)["models"] == [generated_file]
    assert leftovers(settings)["spool"] == []


async def test_onnx_as_it_comes_and_behind_the_sdk_prefix(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    onnx = onnx_logistic()
    await publish_model(client, admin_headers, "Onnx", "plain", onnx)
    await publish_model(client, admin_headers, "Onnx", "sdk", b"blob" + onnx)
    frame, _ = iris()
    model = array_logistic()
    columns = [f"X_{j}" for j in range(4)]
    document = await (await client.get("/api/Onnx/sdk/swagger.json", headers=admin_headers)).json()
    assert list(document["definitions"]["InputData"]["properties"]) == columns
    assert document["definitions"]["InputData"]["required"] == columns
    results = []
    for version in ("plain", "sdk"):
        result = await consume(client, admin_headers, "Onnx", version, frame_body(frame, columns))
        assert result["success"], result
        out = result["outputParameters"]["outputData"]
        assert out["label"] == model.predict(frame.to_numpy()).tolist()
        np.testing.assert_allclose(
            np.array([out[c] for c in OUTPUTS[1:]]).T,
            model.predict_proba(frame.to_numpy()),
            atol=1e-5,
        )
        results.append(result)
    assert results[0] == results[1]
    # what is kept is the ONNX file, without the prefix: the audit trail's digest says so
    entries = await audit_entries(client, action="service.publish")
    assert {e.detail["modelSha256"] for e in entries} == {hashlib.sha256(onnx).hexdigest()}
    kept = [settings.shared_dir / "services" / n for n in leftovers(settings)["models"]]
    assert len(kept) == 2 and kept[0].read_bytes() == kept[1].read_bytes()


async def test_roles_and_ownership(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    alice = await user_headers(client, "alice", "Contributor")
    bob = await user_headers(client, "bob", "Contributor")
    reader = await user_headers(client, "rita", "Reader")
    model = onnx_graph()
    await publish_model(client, reader, "Mine", "1", model, expect=403)
    # who may not publish hears so before the model is read: a 403, not the size's 413
    big = b"\x08" * (MODEL_MAX + 1)
    await publish_model(client, reader, "Mine", "1", big, expect=403)
    await publish_model(client, alice, "Owned", "1", model)
    await publish_model(client, bob, "Owned", "1", big, expect=403, patch=True)
    again = await publish_model(client, alice, "Owned", "1", big, expect=409)
    assert "PATCH /realtime-services/Owned/1" in again["message"]
    await publish_model(client, bob, "Owned", "2", model, expect=403)  # alice owns the name
    await publish_model(client, bob, "Owned", "1", model, expect=403, patch=True)
    await publish_model(client, reader, "Owned", "1", None, expect=403, patch=True, description="x")
    for who in (bob, reader):
        assert (await client.delete("/services/Owned/1", headers=who)).status == 403
        service = await get_service(client, who, "Owned", "1")
        assert service["myPermissionOnService"] == "read only"
    result = await consume(client, reader, "Owned", "1", {"inputData": {"X_0": [1.0], "X_1": [2]}})
    assert result["success"], result
    assert result["outputParameters"]["outputData"] == {"Y_0": [2.0], "Y_1": [4.0]}
    await publish_model(client, alice, "Owned", "1", None, patch=True, description="d")
    # a refused model in a patch changes nothing
    kept = leftovers(settings)
    answer = await publish_model(
        client, alice, "Owned", "1", onnx_graph(shape=(1, 2)), expect=400, patch=True
    )
    assert "first dimension" in answer["message"]
    assert leftovers(settings) == kept
    result = await consume(client, alice, "Owned", "1", {"inputData": {"X_0": [1.0], "X_1": [2]}})
    assert result["outputParameters"]["outputData"] == {"Y_0": [2.0], "Y_1": [4.0]}
    assert (await get_service(client, alice, "Owned", "1"))["description"] == "d"
    await publish_model(client, admin_headers, "Owned", "3", model)  # an Owner may
    assert (await client.delete("/services/Owned/1", headers=alice)).status == 200

    # a Python service is changed through /services, a realtime one's model here only
    await publish(client, admin_headers, "Py", "1", code="y = 1")
    await publish_model(client, admin_headers, "Py", "1", model, expect=400, patch=True)
    await publish_model(client, admin_headers, "Nope", "1", model, expect=404, patch=True)


async def test_refusals_say_why_and_leave_nothing_behind(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings
) -> None:
    from sklearn.semi_supervised import LabelSpreading

    frame, target = iris()
    cases: list[tuple[str, bytes | None, int, str]] = [
        ("no model part", None, 400, "'model'"),
        ("empty", b"", 400, "empty"),
        ("garbage", b"this is neither a pickle nor an ONNX graph", 400, "ONNX"),
        (
            "unconvertible",
            pickle.dumps(LabelSpreading().fit(frame.to_numpy()[::5], target[::5])),
            400,
            "LabelSpreading",
        ),
        ("raises as it loads", pickle.dumps(Boom()), 400, "cannot be loaded"),
        ("not an estimator", pickle.dumps({"weights": [1, 2]}), 400, "dict"),
        ("external data", onnx_graph(external=True), 400, "external data"),
        ("custom domain", onnx_graph(domain="com.example"), 400, "com.example"),
        ("fixed rows", onnx_graph(shape=(1, 2)), 400, "first dimension"),
        ("rank 3", onnx_graph(shape=("N", 2, 2)), 400, "rank 3"),
        ("too large", b"\x08" * (MODEL_MAX + 1), 413, "larger than"),
        ("too large behind the prefix", b"blob" + b"\x08" * (MODEL_MAX + 1), 413, "larger"),
    ]
    before = leftovers(settings)
    for what, model, status, says in cases:
        resp = await client.post(
            "/realtime-services/Bad/1", data=form(model), headers=admin_headers
        )
        assert resp.status == status, (what, await resp.text())
        message = (await resp.json())["message"]
        assert says in message, (what, message)
        if status == 400 and model:  # the container's refusal
            assert message.startswith("the model was refused: "), (what, message)
        assert leftovers(settings) == before, what
        assert await (await client.get("/services/Bad", headers=admin_headers)).json() == []
    resp = await client.post("/realtime-services/Bad/1", data=b"\x08\x07", headers=admin_headers)
    assert resp.status == 400 and "multipart/form-data" in (await resp.json())["message"]
    resp = await client.post(
        "/realtime-services/Bad/1", json={"model": "AAAA"}, headers=admin_headers
    )
    assert resp.status == 400 and "multipart/form-data" in (await resp.json())["message"]
    twice = form(onnx_graph())
    twice.add_field("model", onnx_graph(), filename="model")
    for data, says in (
        (form(onnx_graph(), operation_id="not valid!"), "not a valid operation name"),
        (twice, "two parts named 'model'"),
    ):
        resp = await client.post("/realtime-services/Bad/1", data=data, headers=admin_headers)
        assert resp.status == 400 and says in (await resp.json())["message"]
    for name, version in (("bad name", "1"), ("Bad", "-1")):
        resp = await client.post(
            f"/realtime-services/{name}/{version}", data=form(onnx_graph()), headers=admin_headers
        )
        assert resp.status == 400, (name, version)
    assert leftovers(settings) == before
    refused = await audit_entries(client, action="service.publish")
    assert len(refused) == len(cases) + 6 and {e.outcome for e in refused} == {"failed"}


class Boom:
    """A pickle that fails as it loads (harmless: ``int('boom')`` raises)."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return int, ("boom",)


async def test_a_model_wider_than_the_controller_keeps_is_a_400(
    client: TestClient[Any, Any],
    admin_headers: dict[str, str],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The container may describe what the controller will not hold (the columns live in
    every controller's catalogue and swagger): the publisher's model, so a 400."""
    monkeypatch.setattr("controller.services.realtime.model.MAX_COLUMNS", 1)
    before = leftovers(settings)
    answer = await publish_model(client, admin_headers, "Wide", "1", onnx_graph(), expect=400)
    assert answer["message"] == "the model was refused: the model has more than 1 input columns"
    assert leftovers(settings) == before
