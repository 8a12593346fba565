"""The seed workflow (../shared/seed: "Publish and consume Python web services"), step by
step over plain HTTP, as its generated-client calls put it on the wire. Only the
scikit-learn call is modernised (``predict`` takes 2-D input since scikit-learn 0.19); the
verbatim 1-D call comes back as a clean ``success: false``.

``seed_workflow`` takes a test app's client or an ``aiohttp.ClientSession`` with a
``base_url`` (a live server, or a load balancer in front of a group: tests/webnodes)."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_PASSWORD


async def seed_workflow(client: TestClient[Any, Any] | ClientSession) -> None:
    # -- authentication --
    resp = await client.post("/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    token = (await resp.json())["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    status = await client.get("/status", headers=headers)
    assert status.status == 200

    # -- create session, model, snapshot --
    resp = await client.post(
        "/sessions", json={"name": "Session 1", "runtimeType": "Python"}, headers=headers
    )
    session_id = (await resp.json())["sessionId"]

    async def execute(body: dict[str, Any]) -> dict[str, Any]:
        resp = await client.post(f"/sessions/{session_id}/execute", json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    assert (await execute({"code": "from sklearn import svm\nfrom sklearn import datasets"}))[
        "success"
    ]
    assert (
        await execute(
            {
                "code": "clf=svm.SVC()\niris=datasets.load_iris()\n"
                "names={0:'I. setosa',1:'I. versicolor',2:'I. virginica'}"
            }
        )
    )["success"]
    inputs = [
        {"name": "species_1", "value": [7, 3.2, 4.7, 1.4]},
        {"name": "species_2", "value": [3, 2.6, 3, 2.5]},
    ]
    verbatim = await execute(
        {
            "code": "clf.fit(iris.data, iris.target)\nresult=clf.predict(species_1)\n"
            "other_result=clf.predict(species_2)",
            "inputParameters": inputs,
            "outputParameters": ["result", "other_result"],
        }
    )
    assert verbatim["success"] is False
    assert "ValueError: Expected 2D array, got 1D array instead" in verbatim["errorMessage"]
    modern = await execute(
        {
            "code": "clf.fit(iris.data, iris.target)\nresult=clf.predict([species_1])\n"
            "other_result=clf.predict([species_2])",
            "inputParameters": inputs,
            "outputParameters": ["result", "other_result"],
        }
    )
    assert modern["success"], modern
    assert modern["outputParameters"] == [
        {"name": "result", "value": [1]},
        {"name": "other_result", "value": [1]},
    ]

    resp = await client.post(
        f"/sessions/{session_id}/snapshot", json={"name": "Iris Snapshot"}, headers=headers
    )
    assert resp.status == 201
    snapshot_id = (await resp.json())["snapshotId"]
    snapshots = await (await client.get("/snapshots", headers=headers)).json()
    assert [s["name"] for s in snapshots] == ["Iris Snapshot"] and snapshots[0]["id"] == snapshot_id

    # -- publish as a service --
    flower_data = {"name": "flower_data", "type": "vector"}
    publish = {
        "code": "iris_species = [names[x] for x in clf.predict([flower_data])]",
        "inputParameterDefinitions": [flower_data],
        "outputParameterDefinitions": [{"name": "iris_species", "type": "vector"}],
        "runtimeType": "Python",
        "snapshotId": snapshot_id,
    }
    resp = await client.post("/services/Iris/V1.0", json=publish, headers=headers)
    assert resp.status == 201

    # -- consume --
    for service in await (await client.get("/services/Iris/V1.0", headers=headers)).json():
        assert service["name"] == "Iris" and service["version"] == "V1.0"
        assert service["inputParameterDefinitions"] == [flower_data]
        assert service["outputParameterDefinitions"] == [{"name": "iris_species", "type": "vector"}]
    swagger = await (await client.get("/api/Iris/V1.0/swagger.json", headers=headers)).json()
    assert "/api/Iris/V1.0" in swagger["paths"]
    assert swagger["definitions"]["InputParameters"]["properties"]["flower_data"]["type"] == "array"
    assert "outputParameters" in swagger["definitions"]["WebServiceResult"]["properties"]
    expected = {
        (7, 3.2, 4.7, 1.4): "I. versicolor",
        (3, 2.6, 3, 2.5): "I. versicolor",
        (5.1, 3.5, 1.4, 0.2): "I. setosa",
    }
    for flower, species in expected.items():
        resp = await client.post(
            "/api/Iris/V1.0", json={"flower_data": list(flower)}, headers=headers
        )
        result = await resp.json()
        assert result["success"], result
        assert result["outputParameters"] == {"iris_species": [species]}

    # -- verbatim 1-D predict in a service: a clean success:false --
    resp = await client.post(
        "/services/Iris/V1.1",
        headers=headers,
        json={**publish, "code": "iris_species = [names[x] for x in clf.predict(flower_data)]"},
    )
    assert resp.status == 201
    result = await (
        await client.post(
            "/api/Iris/V1.1", json={"flower_data": [5.1, 3.5, 1.4, 0.2]}, headers=headers
        )
    ).json()
    assert result["success"] is False and "Expected 2D array" in result["errorMessage"]

    # -- manage services --
    resp = await client.patch(
        "/services/Iris/V1.0",
        headers=headers,
        json={
            "description": "Determines iris species using length and width of sepal and petal",
            "runtimeType": "Python",
        },
    )
    assert resp.status == 200
    publish_v2 = {
        "code": "iris_species = [names[x] for x in clf.predict([flower_data])][0]",
        "description": "Determines the species of iris, based on Sepal Length, Sepal Width, "
        "Petal Length and Petal Width",
        "inputParameterDefinitions": [flower_data],
        "outputParameterDefinitions": [{"name": "iris_species", "type": "string"}],
        "runtimeType": "Python",
        "snapshotId": snapshot_id,
    }
    resp = await client.post("/services/Iris/V2.0", json=publish_v2, headers=headers)
    assert resp.status == 201
    result = await (
        await client.post(
            "/api/Iris/V2.0", json={"flower_data": [5.1, 3.5, 1.4, 0.2]}, headers=headers
        )
    ).json()
    assert result["outputParameters"] == {"iris_species": "I. setosa"}

    services = await (await client.get("/services", headers=headers)).json()
    assert [s["version"] for s in services] == ["V1.0", "V1.1", "V2.0"]
    for service in services:
        assert isinstance(service["inputParameterDefinitions"], list)
        assert isinstance(service["outputParameterDefinitions"], list)
    [v1] = [s for s in services if s["version"] == "V1.0"]
    assert v1["description"].startswith("Determines iris species")

    resp = await client.delete("/services/Iris/V2.0", headers=headers)
    assert resp.status == 200
    remaining = await (await client.get("/services/Iris", headers=headers)).json()
    assert [s["version"] for s in remaining] == ["V1.0", "V1.1"]
