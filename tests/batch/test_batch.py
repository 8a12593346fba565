"""Asynchronous batch consumption (API.md §7): durable, resumable, validated."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp.test_utils import TestClient

from controller.app import create_app
from tests.conftest import bearer, login, make_settings, user_headers
from tests.services.conftest import publish

CODE = (
    "import time\ntime.sleep(pause)\n"
    "if x == 13:\n    raise ValueError('unlucky')\n"
    "y = x * 2\nopen('out.txt', 'w').write(str(y))"
)


async def publish_doubler(client: TestClient[Any, Any], headers: dict[str, str]) -> None:
    await publish(
        client,
        headers,
        "Batchy",
        "1",
        code=CODE,
        outputFileNames=["out.txt"],
        inputParameterDefinitions=[
            {"name": "x", "type": "integer"},
            {"name": "pause", "type": "numeric"},
        ],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )


async def start(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    records: Any,
    query: str = "",
    expect: int = 202,
) -> Any:
    resp = await client.post(f"/api/Batchy/1/batch{query}", json=records, headers=headers)
    assert resp.status == expect, await resp.text()
    return await resp.json()


async def wait_done(client: TestClient[Any, Any], headers: dict[str, str], batch_id: str) -> Any:
    for _ in range(600):
        status = await (await client.get(f"/api/Batchy/1/batch/{batch_id}", headers=headers)).json()
        if status["state"] in ("Complete", "Failed"):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError("batch did not finish")


async def first_progress(
    client: TestClient[Any, Any], headers: dict[str, str], batch_id: str
) -> Any:
    """The batch's status once at least one record is done (a container may take seconds to
    start on a loaded machine, so a fixed sleep is a race)."""
    for _ in range(1200):
        status = await (await client.get(f"/api/Batchy/1/batch/{batch_id}", headers=headers)).json()
        if status["completedItemCount"] > 0:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record of batch {batch_id} completed within a minute")


async def test_batch_runs_every_record_in_order(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish_doubler(client, admin_headers)
    records = [{"x": i, "pause": 0} for i in range(20)]
    started = await start(client, admin_headers, records, "?parallelCount=3")
    batch_id = started["batchExecutionId"]
    assert started == {"batchExecutionId": batch_id, "BatchExecutionId": batch_id}
    status = await wait_done(client, admin_headers, batch_id)
    assert status["state"] == "Complete"
    assert status["completedItemCount"] == status["totalItemCount"] == 20
    assert status["parallelCount"] == 3
    results = status["batchExecutionResults"]
    assert [r["outputParameters"]["y"] for i, r in enumerate(results) if i != 13] == [
        i * 2 for i in range(20) if i != 13
    ]
    assert results[13]["success"] is False and "unlucky" in results[13]["errorMessage"]
    # the SDK's spelling of the flag, and both spellings turned off
    for flag in ("showPartialResult=true", "showPartialResults=false"):
        again = await (
            await client.get(f"/api/Batchy/1/batch/{batch_id}?{flag}", headers=admin_headers)
        ).json()
        assert len(again["batchExecutionResults"]) == 20  # complete: results are always there
    assert await (await client.get("/api/Batchy/1/batch", headers=admin_headers)).json() == [
        batch_id
    ]
    files = await (
        await client.get(f"/api/Batchy/1/batch/{batch_id}/4/files", headers=admin_headers)
    ).json()
    assert files == ["out.txt"]
    resp = await client.get(
        f"/api/Batchy/1/batch/{batch_id}/4/files/out.txt", headers=admin_headers
    )
    assert await resp.read() == b"8"
    assert base64.b64decode(results[4]["outputFiles"]["out.txt"]) == b"8"
    assert (
        await client.get(f"/api/Batchy/1/batch/{batch_id}/13/files/out.txt", headers=admin_headers)
    ).status == 404
    assert (
        await client.get(f"/api/Batchy/1/batch/{batch_id}/99/files", headers=admin_headers)
    ).status == 404
    # cancelling a finished batch deletes it, and is idempotent
    for _ in range(2):
        resp = await client.delete(f"/api/Batchy/1/batch/{batch_id}", headers=admin_headers)
        assert resp.status == 200 and await resp.json() == [batch_id]
    assert (
        await client.get(f"/api/Batchy/1/batch/{batch_id}", headers=admin_headers)
    ).status == 404
    assert await (await client.get("/api/Batchy/1/batch", headers=admin_headers)).json() == []


async def test_partial_results_and_cancel(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish_doubler(client, admin_headers)
    records = [{"x": i, "pause": 0.2} for i in range(30)]
    batch_id = (await start(client, admin_headers, records, "?parallelCount=1"))["batchExecutionId"]
    partial = await first_progress(client, admin_headers, batch_id)
    assert partial["state"] == "InProgress" and 0 < partial["completedItemCount"] < 30
    results = partial["batchExecutionResults"]
    assert len(results) == 30 and results[0]["success"] and results[-1] is None
    hidden = await (
        await client.get(
            f"/api/Batchy/1/batch/{batch_id}?showPartialResults=false", headers=admin_headers
        )
    ).json()
    assert hidden["batchExecutionResults"] == []
    await publish(client, admin_headers, "Other", "1", code="y = 1")
    resp = await client.delete(f"/api/Other/1/batch/{batch_id}", headers=admin_headers)
    assert resp.status == 404  # a batch is cancelled under its own service's path
    assert (
        await client.delete(f"/api/Batchy/1/batch/{batch_id}", headers=admin_headers)
    ).status == 200
    assert (
        await client.delete(f"/api/Batchy/1/batch/{batch_id}", headers=admin_headers)
    ).status == 200
    other = await user_headers(client, "stranger")
    assert (await client.delete(f"/api/Batchy/1/batch/{batch_id}", headers=other)).status == 404


async def test_bad_batches_are_400s(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    await publish_doubler(client, admin_headers)
    good = {"x": 1, "pause": 0}
    cases = [
        ([good, {"x": 1, "pause": 0, "extra": 1}], "record 1", "unknown columns ['extra']"),
        ([good, {"pause": 0}], "record 1", "missing columns ['x']"),
        ([good, {"x": "one", "pause": 0}], "record 1", "input 'x'"),
        ({"x": 1}, "JSON array", ""),
        ([], "no records", ""),
        ([1], "record 0", "not a JSON object"),
    ]
    for body, first, second in cases:
        resp = await client.post("/api/Batchy/1/batch", json=body, headers=admin_headers)
        assert resp.status == 400, body
        message = (await resp.json())["message"]
        assert first in message and second in message, message
    for query in (
        "?parallelCount=0",
        "?parallelCount=-2",
        "?parallelCount=1000",
        "?parallelCount=two",
    ):
        resp = await client.post(f"/api/Batchy/1/batch{query}", json=[good], headers=admin_headers)
        assert resp.status == 400, query
        assert "parallelCount" in (await resp.json())["message"]
    assert (
        await client.post("/api/Nope/1/batch", json=[good], headers=admin_headers)
    ).status == 404
    assert await (await client.get("/api/Batchy/1/batch", headers=admin_headers)).json() == []


async def test_a_restart_resumes_unfinished_records(aiohttp_client: Any, data_dir: Any) -> None:
    settings = make_settings(data_dir)
    first = await aiohttp_client(create_app(settings))
    headers = bearer((await login(first))["access_token"])
    await publish_doubler(first, headers)
    records = [{"x": i, "pause": 0.3} for i in range(12)]
    batch_id = (await start(first, headers, records, "?parallelCount=1"))["batchExecutionId"]
    before = await first_progress(first, headers, batch_id)
    assert 0 < before["completedItemCount"] < 12
    await first.close()

    second = await aiohttp_client(create_app(settings))
    headers = bearer((await login(second))["access_token"])
    status = await wait_done(second, headers, batch_id)
    assert status["state"] == "Complete" and status["completedItemCount"] == 12
    assert [r["outputParameters"]["y"] for r in status["batchExecutionResults"]] == [
        i * 2 for i in range(12)
    ]


async def test_a_failing_batch_stops_all_its_workers(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A record whose process ends without a result (fork isolation) fails the batch; the
    other workers stop with it instead of running on unseen."""
    await publish(
        client,
        admin_headers,
        "Dies",
        "1",
        code="import os, time\ntime.sleep(0.2)\nif x == 3:\n    os._exit(1)\ny = x",
        isolation="fork",
        inputParameterDefinitions=[{"name": "x", "type": "integer"}],
        outputParameterDefinitions=[{"name": "y", "type": "integer"}],
    )
    records = [{"x": i} for i in range(40)]
    resp = await client.post(
        "/api/Dies/1/batch?parallelCount=2", json=records, headers=admin_headers
    )
    assert resp.status == 202, await resp.text()
    batch_id = (await resp.json())["batchExecutionId"]
    path = f"/api/Dies/1/batch/{batch_id}"
    for _ in range(600):
        failed = await (await client.get(path, headers=admin_headers)).json()
        if failed["state"] == "Failed":
            break
        await asyncio.sleep(0.1)
    assert failed["state"] == "Failed"
    await asyncio.sleep(1.5)  # more than a flush interval: a worker left running would show
    later = await (await client.get(path, headers=admin_headers)).json()
    assert later["completedItemCount"] == failed["completedItemCount"] < 40
