"""Consuming realtime services (API.md §6.5): many rows a request, scored as scikit-learn
scores them; a data frame checked before any container is touched; the per-service
swagger's columns; batch consumption; pools; a model onnxruntime fails on is a result."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.settings import Settings
from tests.conftest import bearer, login, make_settings
from tests.realtime.conftest import (
    FEATURES,
    OUTPUTS,
    array_logistic,
    frame_body,
    iris,
    logistic,
    onnx_graph,
    onnx_typed,
    pickled_logistic,
    publish_model,
    running,
)
from tests.services.conftest import consume


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    """No container until a request needs one: a refused request must start none.
    Containers are counted by kind, and one taken from the services' warm pool keeps its
    warm labels on Docker: no such pool here."""
    return make_settings(data_dir, service_pool_initial=0, service_warm_pool_size=0)


async def containers(client: TestClient[Any, Any]) -> int:
    """How many service containers run (whichever engine the app has)."""
    return len(await running(client))


def noisy_iris(rows: int, seed: int = 17) -> pd.DataFrame:
    """Iris, then ``rows`` rows more: iris rows with noise, past the training range too."""
    frame, _ = iris()
    generator = np.random.default_rng(seed)
    picked = frame.to_numpy()[generator.integers(0, len(frame), rows)]
    noisy = picked + generator.normal(0.0, 0.6, picked.shape)
    return pd.concat([frame, pd.DataFrame(noisy, columns=frame.columns)], ignore_index=True)


async def test_a_frame_of_many_rows_scores_as_scikit_learn_does(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish_model(client, admin_headers, "Iris", "1", pickled_logistic())
    frame = noisy_iris(2000)
    model = logistic()
    bad: list[tuple[Any, str]] = [
        ({"inputData": {c: [1.0] for c in FEATURES[1:]}}, f"no column '{FEATURES[0]}'"),
        (
            {"inputData": {**{c: [1.0, 2.0] for c in FEATURES}, FEATURES[2]: [1.0, "abc"]}},
            f"column '{FEATURES[2]}' (numbers or null): row 1 is \"abc\"",
        ),
        (
            {"inputData": {**{c: [1.0, 2.0] for c in FEATURES}, FEATURES[3]: [1.0]}},
            f"column '{FEATURES[3]}' has 1 rows",
        ),
        ({"inputData": {c: [] for c in FEATURES}}, "has no rows"),
        ({"inputData": {**{c: [1.0] for c in FEATURES}, FEATURES[1]: 1.0}}, "array"),
        ({"inputData": {**{c: [1.0] for c in FEATURES}, FEATURES[1]: [True]}}, "row 0 is true"),
        ({"inputData": [[1.0, 2.0, 3.0, 4.0]]}, "object of columns"),
        ({"inputData": None}, "object of columns"),
        ({c: [1.0] for c in FEATURES}, "'inputData'"),
        ([{"inputData": {}}], "'inputData'"),
        ("inputData", "'inputData'"),
        # a value is described, never written out: it may be nested past any recursion
        (
            {"inputData": {**{c: [1.0] for c in FEATURES}, FEATURES[0]: [[[[[]]]] * 1000]}},
            "row 0 is an array",
        ),
    ]
    for body, says in bad:
        result = await consume(client, admin_headers, "Iris", "1", body, expect=400)
        assert says in result["message"], (body, result["message"])
    assert await containers(client) == 0  # refused before any container was asked for

    body = frame_body(frame)
    body["inputData"]["species"] = ["?"] * len(frame)  # columns the model does not take
    body["comment"] = "ignored too"
    result = await consume(client, admin_headers, "Iris", "1", body)
    assert result["success"] and result["errorMessage"] == "", result
    assert set(result) == {
        "success",
        "errorMessage",
        "consoleOutput",
        "changedFiles",
        "outputParameters",
        "outputFiles",
    }
    out = result["outputParameters"]["outputData"]
    assert list(out) == OUTPUTS
    assert out["label"] == model.predict(frame).tolist()
    np.testing.assert_allclose(
        np.array([out[c] for c in OUTPUTS[1:]]).T, model.predict_proba(frame), rtol=0, atol=1e-5
    )
    assert await containers(client) == 1

    # a missing value is NaN: the row is scored (onnxruntime's answer for it, nulls for NaN)
    body = frame_body(frame.iloc[:3])
    body["inputData"][FEATURES[0]][1] = None
    result = await consume(client, admin_headers, "Iris", "1", body)
    assert result["success"], result
    out = result["outputParameters"]["outputData"]
    assert all(len(out[c]) == 3 for c in OUTPUTS)
    assert out["label"][0] == model.predict(frame.iloc[:1])[0]

    document = await (await client.get("/api/Iris/1/swagger.json", headers=admin_headers)).json()
    from swagger_spec_validator.validator20 import validate_spec

    validate_spec(copy.deepcopy(document))  # it marks up what it reads
    definitions = document["definitions"]
    assert definitions["InputData"] == {
        "type": "object",
        "properties": {
            c: {"type": "array", "items": {"type": "number", "format": "float", "x-nullable": True}}
            for c in FEATURES
        },
        "required": FEATURES,
    }
    outputs = definitions["OutputData"]["properties"]
    assert list(outputs) == OUTPUTS
    assert outputs["label"]["items"] == {"type": "integer", "format": "int64"}
    assert outputs["probabilities_0"]["items"]["type"] == "number"
    assert definitions["InputParameters"]["properties"] == {
        "inputData": {"$ref": "#/definitions/InputData"}
    }
    assert definitions["OutputParameters"]["properties"] == {  # null when it failed
        "outputData": {"allOf": [{"$ref": "#/definitions/OutputData"}], "x-nullable": True}
    }


async def test_batch_consumption(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish_model(client, admin_headers, "Iris", "1", pickled_logistic())
    frame, _ = iris()
    model = logistic()
    chunks = [frame.iloc[i : i + 30] for i in range(0, len(frame), 30)]
    records: list[Any] = [frame_body(chunk) for chunk in chunks]
    short = {"inputData": {c: [1.0] for c in FEATURES[1:]}}  # a column short
    resp = await client.post("/api/Iris/1/batch", json=[*records, short], headers=admin_headers)
    assert resp.status == 400
    message = (await resp.json())["message"]
    assert "record 5" in message and FEATURES[0] in message, message
    resp = await client.post(
        "/api/Iris/1/batch?parallelCount=2", json=records, headers=admin_headers
    )
    assert resp.status == 202, await resp.text()
    batch_id = (await resp.json())["batchExecutionId"]
    for _ in range(600):
        status = await (
            await client.get(f"/api/Iris/1/batch/{batch_id}", headers=admin_headers)
        ).json()
        if status["state"] in ("Complete", "Failed"):
            break
        await asyncio.sleep(0.1)
    assert status["state"] == "Complete", status
    results = status["batchExecutionResults"]
    assert len(results) == len(chunks)
    for chunk, result in zip(chunks, results, strict=True):
        assert result["success"], result
        out = result["outputParameters"]["outputData"]
        assert out["label"] == model.predict(chunk).tolist()
        np.testing.assert_allclose(
            np.array([out[c] for c in OUTPUTS[1:]]).T, model.predict_proba(chunk), atol=1e-5
        )


async def test_the_pool_api(client: TestClient[Any, Any], admin_headers: dict[str, str]) -> None:
    await publish_model(client, admin_headers, "Pooled", "1", onnx_graph())
    assert await containers(client) == 0
    resp = await client.post(
        "/services/Pooled/1/pool",
        json={"InitialPoolSize": 2, "MaxPoolSize": 3},
        headers=admin_headers,
    )
    assert resp.status == 200 and await resp.json() == "Created."
    for _ in range(600):
        [status] = await (await client.get("/services/Pooled/1/pool", headers=admin_headers)).json()
        if status["status"] == "Success" and status["ready"] == 2:
            break
        await asyncio.sleep(0.1)
    assert status["status"] == "Success" and status["ready"] == 2, status
    assert await containers(client) == 2
    body = {"inputData": {"X_0": [1.0, 2.0], "X_1": [0.5, None]}}
    result = await consume(client, admin_headers, "Pooled", "1", body)
    assert result["outputParameters"]["outputData"] == {"Y_0": [2.0, 3.0], "Y_1": [2.5, None]}
    resp = await client.delete("/services/Pooled/1/pool", headers=admin_headers)
    assert resp.status == 200 and await resp.json() == "Deleted."
    for _ in range(300):
        if await containers(client) == 0:
            break
        await asyncio.sleep(0.1)
    assert await containers(client) == 0
    [status] = await (await client.get("/services/Pooled/1/pool", headers=admin_headers)).json()
    assert status["status"] == "NotFound"
    assert (await consume(client, admin_headers, "Pooled", "1", body))["success"]  # on demand


async def test_what_onnxruntime_fails_on_is_a_result(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """The model reshapes its input to three rows: any other number fails in onnxruntime."""
    await publish_model(client, admin_headers, "Three", "1", onnx_graph(reshape=True))
    three = {"inputData": {"X_0": [1.0, 2.0, 3.0], "X_1": [4.0, 5.0, 6.0]}}
    one = {"inputData": {"X_0": [1.0], "X_1": [4.0]}}
    for _ in range(2):  # and the container goes on serving
        result = await consume(client, admin_headers, "Three", "1", one)
        assert result["success"] is False, result
        assert "Reshape" in result["errorMessage"], result
        assert result["outputParameters"] == {"outputData": None}  # as a failed run does
        result = await consume(client, admin_headers, "Three", "1", three)
        assert result["success"] is True, result
        assert result["outputParameters"]["outputData"] == {
            "Y_0": [1.0, 2.0, 3.0],
            "Y_1": [4.0, 5.0, 6.0],
        }
    assert await containers(client) == 1


async def test_columns_of_every_kind(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish_model(client, admin_headers, "Typed", "1", onnx_typed())
    good = {"a": [1, -2, 3], "s": ["x", "", "é"], "b": [True, False, True]}
    good |= {"left": [0.5, None, 2], "right": [1e300, -1.0, 0.0]}
    bad = [
        ({"a": [1, 1.5, 3]}, "column 'a' (integers from"),
        ({"a": [1, True, 3]}, "row 1 is true"),
        ({"a": [1, 2, 1 << 63]}, "row 2 is"),
        ({"s": ["x", 1, "z"]}, "column 's' (strings): row 1 is 1"),
        ({"s": ["x", None, "z"]}, "row 1 is null"),
        ({"b": [True, 0, False]}, "column 'b' (true or false): row 1 is 0"),
        ({"left": [1.0, "1.0", 2.0]}, "column 'left' (numbers or null): row 1 is \"1.0\""),
        ({"right": None}, "column 'right' must be an array"),
    ]
    for change, says in bad:
        result = await consume(
            client, admin_headers, "Typed", "1", {"inputData": good | change}, expect=400
        )
        assert says in result["message"], (change, result["message"])
    assert await containers(client) == 0
    result = await consume(client, admin_headers, "Typed", "1", {"inputData": good})
    assert result["success"], result
    assert result["outputParameters"]["outputData"] == {
        "a2": [1, -2, 3],
        "s2": ["x", "", "é"],
        "b2": [False, True, False],
        "l2": [0.5, None, 2.0],
        "r2": [1e300, -1.0, 0.0],
    }
    document = await (await client.get("/api/Typed/1/swagger.json", headers=admin_headers)).json()
    inputs = document["definitions"]["InputData"]["properties"]
    assert {c: p["items"] for c, p in inputs.items()} == {
        "a": {"type": "integer", "format": "int64"},
        "s": {"type": "string"},
        "b": {"type": "boolean"},
        "left": {"type": "number", "format": "double", "x-nullable": True},
        "right": {"type": "number", "format": "double", "x-nullable": True},
    }


async def test_a_zipmap_is_taken_off(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """skl2onnx's default output for probabilities is a ZipMap (a list of maps, no
    columns): the check serves the tensor it was made from."""
    from skl2onnx import to_onnx

    frame, _ = iris()
    model = array_logistic()
    onnx = to_onnx(model, frame.to_numpy()[:1].astype(np.float32)).SerializeToString()
    await publish_model(client, admin_headers, "Zipped", "1", onnx)
    columns = [f"X_{j}" for j in range(4)]
    result = await consume(client, admin_headers, "Zipped", "1", frame_body(frame, columns))
    assert result["success"], result
    out = result["outputParameters"]["outputData"]
    probabilities = [f"probabilities_{c}" for c in range(3)]
    assert list(out) == ["output_label", *probabilities]  # skl2onnx's names, ZipMap or not
    assert out["output_label"] == model.predict(frame.to_numpy()).tolist()
    np.testing.assert_allclose(
        np.array([out[c] for c in probabilities]).T,
        model.predict_proba(frame.to_numpy()),
        atol=1e-5,
    )


async def test_a_service_survives_a_restart(aiohttp_client: Any, data_dir: Path) -> None:
    settings = make_settings(data_dir, service_pool_initial=1)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    await publish_model(first, headers, "Durable", "1", onnx_graph(), description="kept")
    await first.close()
    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    body = {"inputData": {"X_0": [1.0], "X_1": [1.0]}}
    result = await consume(second, headers, "Durable", "1", body)
    assert result["outputParameters"]["outputData"] == {"Y_0": [2.0], "Y_1": [3.0]}
    [service] = await (await second.get("/services/Durable/1", headers=headers)).json()
    assert service["runtimeType"] == "Realtime" and service["description"] == "kept"
    document = await (await second.get("/api/Durable/1/swagger.json", headers=headers)).json()
    assert list(document["definitions"]["OutputData"]["properties"]) == ["Y_0", "Y_1"]


async def test_an_answer_too_large_for_the_agent_is_a_result(
    aiohttp_client: Any, data_dir: Path
) -> None:
    """The agent's replies are bounded (O16N_AGENT_REPLY_MAX): scoring more rows than fit
    is the request's failure (200, success false), as a Python service's outputs are."""
    settings = make_settings(data_dir, service_pool_initial=0, agent_reply_max_bytes=256 * 1024)
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    await publish_model(client, headers, "Wide", "1", onnx_graph())
    rows = 60_000  # some 0.8 MB each way
    body = {"inputData": {"X_0": [0.125] * rows, "X_1": [0.25] * rows}}
    result = await consume(client, headers, "Wide", "1", body)
    assert result["success"] is False, result
    assert "bytes" in result["errorMessage"], result
    small = {"inputData": {"X_0": [1.0], "X_1": [1.0]}}
    assert (await consume(client, headers, "Wide", "1", small))["success"]


async def test_a_body_larger_than_a_container_takes_is_a_413(
    client: TestClient[Any, Any], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inputs go to the container in one message, which the agent reads up to a
    limit; past it the agent would hang up: refused before any container is touched."""
    from o16n_agent.agent import REQUEST_LIMIT

    from controller.runtime.agent_link import AGENT_REQUEST_MAX

    assert AGENT_REQUEST_MAX == REQUEST_LIMIT
    await publish_model(client, admin_headers, "Big", "1", pickled_logistic())
    small = frame_body(noisy_iris(2))
    monkeypatch.setattr("controller.services.routes.CONSUME_BODY_MAX", len(json.dumps(small)))
    body = frame_body(noisy_iris(100))
    result = await consume(client, admin_headers, "Big", "1", body, expect=413)
    assert "fewer rows" in result["message"]
    assert await containers(client) == 0
    result = await consume(client, admin_headers, "Big", "1", small)
    assert result["success"], result


async def test_inputs_that_grow_past_a_containers_message_are_a_413(
    client: TestClient[Any, Any], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """JSON numbers written again may take several times their bytes (``1e15`` is
    ``1000000000000000.0``): what is measured is the message the container is sent."""
    await publish_model(client, admin_headers, "Grow", "1", pickled_logistic())
    monkeypatch.setattr("controller.services.consume.AGENT_REQUEST_MAX", 4096 + 1500)
    columns = ", ".join(f'"{c}": [{", ".join(["1e15"] * 30)}]' for c in FEATURES)
    raw = '{"inputData": {' + columns + "}}"
    assert len(raw) < 1500 < 4 * len(raw)
    headers = {**admin_headers, "Content-Type": "application/json"}
    resp = await client.post("/api/Grow/1", data=raw, headers=headers)
    assert resp.status == 413, await resp.text()
    assert "fewer rows" in (await resp.json())["message"]
    resp = await client.post("/api/Grow/1/batch", data=f"[{raw}]", headers=headers)
    assert resp.status == 413 and "record 0" in (await resp.json())["message"]
    assert await containers(client) == 0
    small = {"inputData": {c: [1.0] for c in FEATURES}}
    result = await consume(client, admin_headers, "Grow", "1", small)
    assert result["success"], result
