"""Microsoft's Python SDK (azureml-model-management-sdk 1.0.1b6.post1), unchanged, on the
realtime path (API.md §5.12, §6.5): deploy an ONNX model behind the SDK's required
``b"blob"`` prefix, consume a data frame, redeploy another model, get, list, delete."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient
from azureml.common.http_client import HttpException
from azureml.deploy import DeployClient
from azureml.deploy.server import MLServer

from tests.clients.test_sdk import blocking, host
from tests.conftest import ADMIN_PASSWORD
from tests.realtime.conftest import array_logistic, iris, onnx_graph, onnx_logistic

pytestmark = pytest.mark.docker

COLUMNS = [f"X_{j}" for j in range(4)]


def realtime_round_trip(base: str) -> dict[str, Any]:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    frame, _ = iris()
    df = pd.DataFrame(frame.to_numpy(), columns=COLUMNS)
    svc = (
        sdk.realtime_service("Flowers")
        .version("v1")
        .serialized_model(b"blob" + onnx_logistic())
        .description("iris, realtime")
        .deploy()
    )
    first = svc.consume(df)
    capabilities = svc.capabilities()

    # another model in its place: Y = X + [1, 2] on two columns
    redeployed = (
        sdk.realtime_service("Flowers")
        .version("v1")
        .serialized_model(b"blob" + onnx_graph())
        .description("adds")
        .redeploy()
    )
    second = redeployed.consume(pd.DataFrame({"X_0": [1.0, 2.0], "X_1": [3.0, 4.0]}))
    fetched = sdk.get_service("Flowers", version="v1")
    listed = sdk.list_services("Flowers")
    refused = None
    try:  # the SDK's own check: a model must start with b"blob"
        sdk.realtime_service("Flowers").version("v2").serialized_model(onnx_graph()).deploy()
    except ValueError as exc:
        refused = str(exc)
    deleted = sdk.delete_service("Flowers", version="v1")
    gone = None
    try:
        sdk.get_service("Flowers", version="v1")
    except (HttpException, ValueError) as exc:
        gone = type(exc).__name__
    return {
        "first_error": first.error,
        "first": first.outputs["outputData"],
        "capabilities": capabilities,
        "second_error": second.error,
        "second": second.outputs["outputData"],
        "fetched": (fetched.capabilities()["description"], fetched.capabilities()["runtime"]),
        "listed": [(s["name"], s["version"], s["runtimeType"]) for s in listed],
        "refused": refused,
        "deleted": deleted,
        "gone": gone,
    }


async def test_the_sdk_deploys_consumes_redeploys_and_deletes_a_realtime_service(
    client: TestClient[Any, Any],
) -> None:
    got = await blocking(realtime_round_trip, host(client))
    frame, _ = iris()
    model = array_logistic()
    assert got["first_error"] == "", got
    first: pd.DataFrame = got["first"]
    assert isinstance(first, pd.DataFrame)
    assert list(first.columns) == ["label", "probabilities_0", "probabilities_1", "probabilities_2"]
    assert first["label"].tolist() == model.predict(frame.to_numpy()).tolist()
    np.testing.assert_allclose(
        first[first.columns[1:]].to_numpy(), model.predict_proba(frame.to_numpy()), atol=1e-5
    )
    capabilities = got["capabilities"]
    assert capabilities["runtime"] == "Realtime"
    assert capabilities["inputs"] == [{"name": "inputData", "type": "data.frame"}]
    assert capabilities["outputs"] == [{"name": "outputData", "type": "data.frame"}]
    assert capabilities["description"] == "iris, realtime"
    assert got["second_error"] == "", got
    assert got["second"].to_dict("list") == {"Y_0": [2.0, 3.0], "Y_1": [5.0, 6.0]}
    assert got["fetched"] == ("adds", "Realtime")
    assert got["listed"] == [("Flowers", "v1", "Realtime")]
    assert got["refused"] is not None and "rx_serialize_model" in got["refused"]
    assert got["deleted"] is True
    assert got["gone"] is not None
