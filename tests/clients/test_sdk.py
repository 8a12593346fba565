"""Microsoft's Python SDK (azureml-model-management-sdk 1.0.1b6.post1) against o16n, unchanged
(API.md §13): deploy with code_fn + init, models and objects, every input and output type,
code_str, artifacts, redeploy, get/list, consume, swagger, batch, delete."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient
from azureml.common.http_client import HttpException
from azureml.deploy import DeployClient
from azureml.deploy.server import MLServer
from sklearn.linear_model import LinearRegression

from tests.clients import sdk_functions
from tests.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.docker

T = TypeVar("T")


async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """The SDK is synchronous (requests); run it off the loop that serves it."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def host(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("/")).rstrip("/")


def deploy_scorer(base: str) -> Any:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    model = LinearRegression().fit(np.array([[0.0], [1.0], [2.0]]), np.array([0.0, 2.0, 4.0]))
    return (
        sdk.service("Scorer")
        .version("1.0")
        .code_fn(sdk_functions.score, sdk_functions.init)
        .inputs(f=float, i=int, b=bool, s=str, v=np.array, m=np.matrix, df=pd.DataFrame)
        .outputs(answer=pd.DataFrame)
        .models(model=model)
        .objects(offset=10.0)
        .artifacts(["answer.csv"])
        .description("scores things")
        .deploy()
    )


def use_scorer(base: str) -> dict[str, Any]:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    svc = sdk.get_service("Scorer", version="1.0")
    res = svc.score(
        3.0,
        2,
        True,
        "abc",
        np.array([1, 2, 3]),
        np.matrix([[1, 2], [3, 4]]),
        pd.DataFrame({"a": [1], "b": [2]}),
    )
    answer = res.output("answer")
    artifact = res.artifact("answer.csv")
    swagger = json.loads(svc.swagger())
    capabilities = svc.capabilities()
    return {
        "error": res.error,
        "answer": answer.to_dict("list"),
        "artifact": artifact,
        "swagger_op": swagger["paths"]["/api/Scorer/1.0"]["post"]["operationId"],
        "capabilities": capabilities,
    }


def deploy_types(base: str) -> dict[str, Any]:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    code = (
        "import numpy as np\nimport pandas as pd\n"
        "f2 = f * 2\ni2 = i + 1\nb2 = not b\ns2 = s + '!'\n"
        "v2 = np.array(v) * 2\nm2 = np.matrix(m).T\ndf2 = df.assign(c=df['a'] + 1)"
    )
    svc = (
        sdk.service("Types")
        .version("v1")
        .code_str(code)
        .inputs(f=float, i=int, b=bool, s=str, v=np.array, m=np.matrix, df=pd.DataFrame)
        .outputs(f2=float, i2=int, b2=bool, s2=str, v2=np.array, m2=np.matrix, df2=pd.DataFrame)
        .deploy()
    )
    res = svc.consume(
        1.5,
        2,
        False,
        "hi",
        np.array([1.0, 2.0]),
        np.matrix([[1, 2], [3, 4]]),
        pd.DataFrame({"a": [1, 2]}),
    )
    out = res.outputs
    return {
        "error": res.error,
        "f2": out["f2"],
        "i2": out["i2"],
        "b2": out["b2"],
        "s2": out["s2"],
        "v2": out["v2"].tolist(),
        "v2_type": type(out["v2"]).__name__,
        "m2": out["m2"].tolist(),
        "m2_type": type(out["m2"]).__name__,
        "df2": out["df2"].to_dict("list"),
    }


def redeploy_and_list(base: str) -> dict[str, Any]:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    sdk.service("Types").version("v2").code_str("y = x + 1").inputs(x=int).outputs(y=int).deploy()
    latest = sdk.get_service("Types")
    redeployed = (
        sdk.service("Types")
        .version("v2")
        .code_str("y = x + 100")
        .inputs(x=int)
        .outputs(y=int)
        .description("now adds 100")
        .redeploy()
    )
    return {
        "latest": latest.capabilities()["version"],
        "redeployed": redeployed.consume(1).output("y"),
        "description": sdk.get_service("Types", version="v2").capabilities()["description"],
        "all": sorted((s["name"], s["version"]) for s in sdk.list_services()),
        "by_name": [s["version"] for s in sdk.list_services("Types")],
        "by_version": [s["version"] for s in sdk.list_services("Types", version="v1")],
    }


def batch(base: str, download_to: Path) -> dict[str, Any]:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    svc = sdk.get_service("Scorer", version="1.0")
    records = pd.DataFrame(
        {
            "f": [1.0, 2.0, 3.0],
            "i": [1, 2, 3],
            "b": [True, False, True],
            "s": ["a", "b", "c"],
            "v": [np.array([1, 2])] * 3,
            "m": [np.matrix([[1, 2]])] * 3,
            "df": [pd.DataFrame({"z": [1]})] * 3,
        }
    )
    job = svc.batch(records, parallel_count=2).start()
    for _ in range(300):
        results = job.results(show_partial_results=True)
        if results.state == "Complete":
            break
        time.sleep(0.1)
    outputs = [results.execution(i).output("answer").to_dict("list") for i in range(3)]
    artifacts = job.list_artifacts(1)
    content = job.artifact(1, "answer.csv")
    # positional: the SDK's @execution decorator drops keyword arguments
    paths = job.download(1, "answer.csv", str(download_to))
    ids = svc.list_batch_executions()
    job.cancel()
    job.cancel()  # idempotent
    return {
        "state": results.state,
        "done": (results.completed_item_count, results.total_item_count),
        "outputs": outputs,
        "artifacts": artifacts,
        "content": content,
        "downloaded": Path(paths[0]).read_bytes(),
        "ids": ids,
        "execution_id": job.execution_id,
        "after": svc.list_batch_executions(),
    }


def delete(base: str) -> dict[str, Any]:
    sdk = DeployClient(base, use=MLServer, auth=("admin", ADMIN_PASSWORD))
    deleted = sdk.delete_service("Types", version="v1")
    try:
        sdk.get_service("Types", version="v1")
    except (HttpException, ValueError) as exc:
        missing = type(exc).__name__
    return {"deleted": deleted, "missing": missing}


async def test_microsoft_sdk_works_unchanged(
    client: TestClient[Any, Any], admin_headers: dict[str, str], tmp_path: Path
) -> None:
    base = host(client)
    deployed = await blocking(deploy_scorer, base)
    assert deployed.capabilities()["operation_id"] == "score"
    # the SDK closed its session and deleted its snapshot straight after publishing
    assert await (await client.get("/sessions", headers=admin_headers)).json() == []
    assert await (await client.get("/snapshots", headers=admin_headers)).json() == []

    used = await blocking(use_scorer, base)
    assert used["error"] == ""
    assert used["answer"] == {
        "pred": [17.0],
        "i2": [4],
        "nb": [False],
        "s": ["ABC"],
        "vsum": [6.0],
        "mshape": [22],
        "cols": ["a,b"],
    }
    assert used["artifact"] == b"x\n1\n2\n"
    assert used["swagger_op"] == "score"
    assert used["capabilities"]["artifacts"] == ["answer.csv"]
    assert used["capabilities"]["description"] == "scores things"

    typed = await blocking(deploy_types, base)
    assert typed == {
        "error": "",
        "f2": 3.0,
        "i2": 3,
        "b2": True,
        "s2": "hi!",
        "v2": [2.0, 4.0],
        "v2_type": "ndarray",
        "m2": [[1, 3], [2, 4]],
        "m2_type": "matrix",
        "df2": {"a": [1, 2], "c": [2, 3]},
    }

    listed = await blocking(redeploy_and_list, base)
    assert listed["latest"] == "v2"
    assert listed["redeployed"] == 101
    assert listed["description"] == "now adds 100"
    assert listed["all"] == [("Scorer", "1.0"), ("Types", "v1"), ("Types", "v2")]
    assert listed["by_name"] == ["v1", "v2"]
    assert listed["by_version"] == ["v1"]

    batched = await blocking(batch, base, tmp_path)
    assert batched["state"] == "Complete" and batched["done"] == (3, 3)
    assert [o["pred"] for o in batched["outputs"]] == [[13.0], [15.0], [17.0]]
    assert batched["artifacts"] == ["answer.csv"]
    assert batched["content"] == batched["downloaded"] == b"x\n1\n2\n"
    assert batched["ids"] == [batched["execution_id"]]
    assert batched["after"] == []

    deleted = await blocking(delete, base)
    assert deleted["deleted"] is True
    assert deleted["missing"] in ("HttpException", "ValueError")
