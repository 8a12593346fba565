"""The Iris service of Microsoft's Python quickstart, published through the API (consume
and batch benches).

A session imports scikit-learn and trains an SVC on iris, a snapshot is taken, and each
version is published from it with the quickstart's code (with the 2-D input modern
scikit-learn requires): input ``flower_data`` (vector), output ``iris_species`` (vector).
"""

from __future__ import annotations

import time
from typing import Any

from bench._client import Api
from bench._server import BenchError, Server

SERVICE = "Iris"

#: The quickstart's session code, in two executes.
SETUP_CODE = (
    "from sklearn import svm\nfrom sklearn import datasets",
    "clf=svm.SVC()\niris=datasets.load_iris()\n"
    "names={0:'I. setosa',1:'I. versicolor',2:'I. virginica'}\n"
    "clf.fit(iris.data, iris.target)",
)
SERVICE_CODE = "iris_species = [names[x] for x in clf.predict([flower_data])]"

#: Real iris measurements (rows 0, 50, 100, 1, 51, 101 of scikit-learn's data set) and their
#: species; the SVC classifies each of them correctly. The first is the benches' INPUT.
ROWS: list[tuple[list[float], str]] = [
    ([5.1, 3.5, 1.4, 0.2], "I. setosa"),
    ([7.0, 3.2, 4.7, 1.4], "I. versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "I. virginica"),
    ([4.9, 3.0, 1.4, 0.2], "I. setosa"),
    ([6.4, 3.2, 4.5, 1.5], "I. versicolor"),
    ([5.8, 2.7, 5.1, 1.9], "I. virginica"),
]
INPUT = {"flower_data": ROWS[0][0]}


def record(i: int) -> dict[str, Any]:
    return {"flower_data": ROWS[i % len(ROWS)][0]}


def answer_ok(answer: Any, i: int = 0) -> bool:
    """Whether a consume answer (or batch result) is the right one for ``record(i)``."""
    return (
        isinstance(answer, dict)
        and answer.get("success") is True
        and (answer.get("outputParameters") or {}).get("iris_species") == [ROWS[i % len(ROWS)][1]]
    )


def snapshot(api: Api) -> tuple[str, dict[str, float]]:
    """The trained session's snapshot id and the set-up's timings; the session is closed."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    session = api.session()
    timings["create_session_s"] = time.perf_counter() - started
    try:
        for i, code in enumerate(SETUP_CODE):
            started = time.perf_counter()
            api.execute(session, code)
            timings[f"execute_{i + 1}_s"] = time.perf_counter() - started
        started = time.perf_counter()
        answer = api.ok("POST", f"/sessions/{session}/snapshot", {"name": "Iris Snapshot"})
        timings["snapshot_s"] = time.perf_counter() - started
    finally:
        api.call("DELETE", f"/sessions/{session}")
    return str(answer["snapshotId"]), timings


def publish(api: Api, server: Server, snapshot_id: str, version: str) -> dict[str, Any]:
    """Publish ``version``; seconds from sending the publish to the first right consume
    answer (sent at once, and again while it is 503)."""
    body = {
        "code": SERVICE_CODE,
        "inputParameterDefinitions": [{"name": "flower_data", "type": "vector"}],
        "outputParameterDefinitions": [{"name": "iris_species", "type": "vector"}],
        "runtimeType": "Python",
        "snapshotId": snapshot_id,
    }
    started = time.perf_counter()
    api.ok("POST", f"/services/{SERVICE}/{version}", body)
    published = time.perf_counter() - started
    attempts = 0
    while True:
        attempts += 1
        status, answer = api.call("POST", f"/api/{SERVICE}/{version}", INPUT)
        if status != 503:
            break
        server.check_alive()
    elapsed = time.perf_counter() - started
    if status != 200 or not answer_ok(answer):
        raise BenchError(f"first consume of {version}: HTTP {status}: {str(answer)[:400]}")
    return {
        "version": version,
        "first_consume_s": elapsed,
        "publish_answer_s": published,
        "attempts": attempts,
    }


def pool(api: Api, version: str) -> dict[str, Any]:
    """The version's pool as ``GET /services/Iris/{version}/pool`` reports it (sizes,
    ready, busy, queued): with compute nodes one entry per node it runs on, with that
    node's ``ready`` and ``busy`` (summed here) and the pool's sizes and queue; ``nodes``
    names them."""
    entries: list[dict[str, Any]] = api.ok("GET", f"/services/{SERVICE}/{version}/pool")
    status = dict(entries[0])
    for count in ("ready", "busy"):
        status[count] = sum(int(entry[count]) for entry in entries)
    status["nodes"] = [entry.get("computeNodeEndpoint") for entry in entries]
    return status


def wait_pool(
    api: Api, version: str, size: int | None = None, timeout: float = 180, fatal: bool = True
) -> bool:
    """Until the version's pool has ``size`` ready containers (default: its own
    ``initialPoolSize``) and none busy; False (or an error, with ``fatal``) when that does
    not happen within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status = pool(api, version)
        want = status["initialPoolSize"] if size is None else size
        if status["ready"] >= want and status["busy"] == 0:
            return True
        if time.monotonic() > deadline:
            if fatal:
                raise BenchError(f"the pool of {SERVICE}/{version} did not fill: {status}")
            return False
        time.sleep(0.1)
