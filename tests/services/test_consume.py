"""Consuming a service (API.md §6): typed inputs and outputs, errors as results, statelessness,
output files, initCode, isolation, the queue, container death, the per-service swagger."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import create_app
from controller.runtime.sandbox import FALLBACK_LOG
from tests.conftest import bearer, login, make_settings
from tests.services.conftest import consume, publish

pytestmark = pytest.mark.docker

TYPES = [
    {"name": "n", "type": "numeric"},
    {"name": "i", "type": "integer"},
    {"name": "b", "type": "logical"},
    {"name": "s", "type": "character"},
    {"name": "v", "type": "vector"},
    {"name": "m", "type": "matrix"},
    {"name": "df", "type": "data.frame"},
]
ECHO = (
    "import numpy, pandas\n"
    "kinds = [type(n).__name__, type(i).__name__, type(b).__name__, type(s).__name__,\n"
    "         type(v).__name__, type(m).__name__, type(df).__name__]\n"
    "n2, i2, b2, s2 = n * 2, i + 1, not b, s.upper()\n"
    "v2 = v * 2\nm2 = m.T\ndf2 = df.assign(z=df['x'] * 10)"
)


async def test_every_parameter_type_round_trips(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish(
        client,
        admin_headers,
        "Types",
        "1",
        code=ECHO,
        inputParameterDefinitions=TYPES,
        outputParameterDefinitions=[
            {"name": "kinds", "type": "vector"},
            {"name": "n2", "type": "numeric"},
            {"name": "i2", "type": "integer"},
            {"name": "b2", "type": "logical"},
            {"name": "s2", "type": "character"},
            {"name": "v2", "type": "vector"},
            {"name": "m2", "type": "matrix"},
            {"name": "df2", "type": "data.frame"},
        ],
    )
    body = {
        "n": 1.5,
        "i": 2,
        "b": True,
        "s": "abc",
        "v": [1, 2, 3],
        "m": [[1, 2], [3, 4]],
        "df": {"x": [1.0, 2.0], "y": ["a", "b"]},
        "ignored": "extra keys are fine",
    }
    result = await consume(client, admin_headers, "Types", "1", body)
    assert result["success"], result
    assert result["outputParameters"] == {
        "kinds": ["float", "int", "bool", "str", "ndarray", "matrix", "DataFrame"],
        "n2": 3.0,
        "i2": 3,
        "b2": False,
        "s2": "ABC",
        "v2": [2, 4, 6],
        "m2": [[1, 3], [2, 4]],
        "df2": {"x": [1.0, 2.0], "y": ["a", "b"], "z": [10.0, 20.0]},
    }
    bad = {
        "n": ("x", "expected a number"),
        "i": (1.5, "expected an integer"),
        "b": (1, "expected true or false"),
        "s": (5, "expected a string"),
        "v": ({"a": 1}, "expected an array"),
        "m": ([[1], [2, 3]], "differ in length"),
        "df": ({"x": [1], "y": [1, 2]}, "differ in length (x=1, y=2)"),
    }
    for name, (value, message) in bad.items():
        resp = await client.post("/api/Types/1", json={**body, name: value}, headers=admin_headers)
        assert resp.status == 400, name
        text = (await resp.json())["message"]
        assert f"input '{name}'" in text and message in text, text
    resp = await client.post(
        "/api/Types/1", json={k: v for k, v in body.items() if k != "v"}, headers=admin_headers
    )
    assert resp.status == 400 and "missing input 'v'" in (await resp.json())["message"]
    resp = await client.post("/api/Types/1", json=[1, 2], headers=admin_headers)
    assert resp.status == 400


async def test_errors_are_results_and_requests_are_stateless(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    code = (
        "print('seen', x)\n"
        "leaked = globals().get('counter', 0)\ncounter = leaked + 1\n"
        "import os\nbefore = sorted(os.listdir('.'))\nopen('scratch.txt', 'w').write('s')\n"
        "open('report.txt', 'w').write('r' * x)\n"
        "if x < 0:\n    raise ValueError('negative')\n"
        "y = leaked"
    )
    await publish(
        client,
        admin_headers,
        "Stateless",
        "1",
        code=code,
        outputFileNames=["report.txt", "absent.png"],
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[
            {"name": "y", "type": "integer"},
            {"name": "before", "type": "vector"},
        ],
    )
    for _ in range(3):
        result = await consume(client, admin_headers, "Stateless", "1", {"x": 2})
        assert result["success"], result
        assert result["outputParameters"] == {"y": 0, "before": []}
        assert result["consoleOutput"] == "seen 2\n"
        assert sorted(result["changedFiles"]) == ["report.txt", "scratch.txt"]
        assert base64.b64decode(result["outputFiles"]["report.txt"]) == b"rr"
        assert result["outputFiles"]["absent.png"] is None
    result = await consume(client, admin_headers, "Stateless", "1", {"x": -1})
    assert result["success"] is False
    assert "ValueError: negative" in result["errorMessage"]
    assert result["outputParameters"] == {"y": None, "before": None}
    assert result["consoleOutput"] == "seen -1\n"


async def test_init_code_runs_once_per_container(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    init = (
        "import time\ndef init():\n    global model, loaded_at\n"
        "    model = {'k': 7}\n    loaded_at = time.time()\ninit()"
    )
    await publish(
        client,
        admin_headers,
        "Init",
        "1",
        initCode=init,
        code="y = model['k']\nt = loaded_at",
        outputParameterDefinitions=[
            {"name": "y", "type": "integer"},
            {"name": "t", "type": "numeric"},
        ],
    )
    first = await consume(client, admin_headers, "Init", "1", {})
    second = await consume(client, admin_headers, "Init", "1", {})
    assert first["outputParameters"]["y"] == 7
    assert first["outputParameters"]["t"] == second["outputParameters"]["t"]
    await publish(
        client,
        admin_headers,
        "BadInit",
        "1",
        initCode="raise RuntimeError('no model')",
        code="y = 1",
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    result = await consume(client, admin_headers, "BadInit", "1", {})
    assert result["success"] is False and "initCode failed" in result["errorMessage"]
    assert "RuntimeError: no model" in result["errorMessage"]


async def test_fork_isolation_stops_shared_objects_from_leaking(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    init = "cache = []"
    code = "cache.append(x)\nseen = len(cache)"
    for isolation, expected in (("shared", [1, 2, 3]), ("fork", [1, 1, 1])):
        name = f"Leak{isolation}"
        await publish(
            client,
            admin_headers,
            name,
            "1",
            initCode=init,
            code=code,
            isolation=isolation,
            inputParameterDefinitions=[{"name": "x", "type": "integer"}],
            outputParameterDefinitions=[{"name": "seen", "type": "integer"}],
        )
        seen = [
            (await consume(client, admin_headers, name, "1", {"x": 5}))["outputParameters"]["seen"]
            for _ in range(3)
        ]
        assert seen == expected, isolation


async def test_a_dying_container_is_a_result_and_is_replaced(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish(
        client,
        admin_headers,
        "Crashy",
        "1",
        code="import os\nif crash:\n    os._exit(3)\ny = 1",
        inputParameterDefinitions=[{"name": "crash", "type": "logical"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    result = await consume(client, admin_headers, "Crashy", "1", {"crash": True})
    assert result["success"] is False and "container ended" in result["errorMessage"]
    result = await consume(client, admin_headers, "Crashy", "1", {"crash": False})
    assert result["success"] and result["outputParameters"] == {"y": 1}


async def test_busy_service_queues_then_answers_503(aiohttp_client: Any, data_dir: Any) -> None:
    settings = make_settings(
        data_dir,
        service_pool_initial=1,
        service_pool_max=1,
        service_queue_max=1,
        service_queue_wait=20,
    )
    client = await aiohttp_client(create_app(settings))
    headers = bearer((await login(client))["access_token"])
    await publish(
        client,
        headers,
        "Slow",
        "1",
        code="import time\ntime.sleep(s)",
        inputParameterDefinitions=[{"name": "s", "type": "numeric"}],
    )
    await consume(client, headers, "Slow", "1", {"s": 0})  # warm
    first = asyncio.ensure_future(consume(client, headers, "Slow", "1", {"s": 2}))
    await asyncio.sleep(0.3)
    queued = asyncio.ensure_future(consume(client, headers, "Slow", "1", {"s": 0}))
    await asyncio.sleep(0.3)
    resp = await client.post("/api/Slow/1", json={"s": 0}, headers=headers)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert (await first)["success"] and (await queued)["success"]


async def test_time_limit(
    aiohttp_client: Any, data_dir: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A request past the time limit is interrupted by a message to the agent (never the
    engine's signal), in the warm process and in a forked child alike; the container
    goes on serving."""
    caplog.set_level(logging.WARNING)
    client = await aiohttp_client(create_app(make_settings(data_dir, consume_timeout=1)))
    headers = bearer((await login(client))["access_token"])
    for name, isolation in (("Loop", "shared"), ("Nap", "fork")):
        await publish(
            client,
            headers,
            name,
            "1",
            code="import time\nwhile go:\n    time.sleep(0.01 if isolation == 'fork' else 0)",
            initCode=f"isolation = {isolation!r}",
            isolation=isolation,
            inputParameterDefinitions=[{"name": "go", "type": "logical"}],
        )
        result = await consume(client, headers, name, "1", {"go": True})
        assert result["success"] is False and "time limit of 1 s" in result["errorMessage"]
        assert (await consume(client, headers, name, "1", {"go": False}))["success"]
    assert FALLBACK_LOG not in caplog.text


async def test_per_service_swagger(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    from swagger_spec_validator.validator20 import validate_spec

    await publish(
        client,
        admin_headers,
        "Doc",
        "2.0",
        code="y = x",
        operationId="score",
        description="scores",
        outputFileNames=["plot.png"],
        inputParameterDefinitions=[
            {"name": "x", "type": "numeric"},
            {"name": "df", "type": "data.frame"},
        ],
        outputParameterDefinitions=[{"name": "y", "type": "string"}],
    )
    resp = await client.get("/api/Doc/2.0/swagger.json", headers=admin_headers)
    assert resp.status == 200
    document = await resp.json()
    validate_spec(document)
    post = document["paths"]["/api/Doc/2.0"]["post"]
    assert post["operationId"] == "score" and post["security"] == [{"Bearer": []}]
    assert document["info"] == {"title": "Doc", "description": "scores", "version": "2.0"}
    inputs = document["definitions"]["InputParameters"]
    assert (
        inputs["properties"]["x"]["type"] == "number"
        and inputs["properties"]["df"]["type"] == "object"
    )
    assert document["definitions"]["OutputParameters"]["properties"]["y"]["type"] == "string"
    assert "outputFiles" in document["definitions"]["WebServiceResult"]["properties"]
    assert "/login" in document["paths"]
    assert (await client.get("/api/Doc/9/swagger.json", headers=admin_headers)).status == 404
    assert (await client.get("/api/Doc/2.0/swagger.json")).status == 401


async def test_files_go_back_to_how_init_code_left_them(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A request's file changes are undone, back to the files initCode wrote (not to the
    published workspace), in both isolations, and each request reports only its own."""
    init = "open('model.txt', 'w').write('trained')"
    code = (
        "seen = open('model.txt').read()\n"
        "open('model.txt', 'a').write(' and changed')\n"
        "open('scratch.txt', 'w').write('x')"
    )
    for isolation in ("shared", "fork"):
        name = f"Files{isolation}"
        await publish(
            client,
            admin_headers,
            name,
            "1",
            initCode=init,
            code=code,
            isolation=isolation,
            outputParameterDefinitions=[{"name": "seen", "type": "character"}],
        )
        for _ in range(3):
            result = await consume(client, admin_headers, name, "1", {})
            assert result["outputParameters"] == {"seen": "trained"}, isolation
            assert sorted(result["changedFiles"]) == ["model.txt", "scratch.txt"], isolation
