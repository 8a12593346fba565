"""bench/_iris.py's pool wait, against answers given by hand."""

from __future__ import annotations

from typing import Any

from bench import _iris as iris


class FakeApi:
    """``GET …/pool`` answering the statuses given, one per call, the last one forever."""

    def __init__(self, *statuses: dict[str, Any]) -> None:
        self.statuses = list(statuses)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        assert (method, path) == ("GET", "/services/Iris/V1.0/pool")
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return [{"initialPoolSize": 3, "maxPoolSize": 4, "queued": 0, **status}]


def test_wait_pool_waits_for_the_pools_own_initial_size() -> None:
    api = FakeApi({"ready": 1, "busy": 0}, {"ready": 2, "busy": 0}, {"ready": 3, "busy": 0})
    assert iris.wait_pool(api, "V1.0")  # type: ignore[arg-type]
    assert api.statuses == [{"ready": 3, "busy": 0}]
    short = FakeApi({"ready": 2, "busy": 0})
    assert not iris.wait_pool(short, "V1.0", timeout=0.2, fatal=False)  # type: ignore[arg-type]


class NodesApi:
    """``GET …/pool`` as with compute nodes: one entry per node the pool runs on."""

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        sizes = {"initialPoolSize": 4, "maxPoolSize": 4}
        return [
            {
                "computeNodeEndpoint": "ssh://root@10.0.0.2",
                **sizes,
                "ready": 2,
                "busy": 1,
                "queued": 5,
            },
            {
                "computeNodeEndpoint": "ssh://root@10.0.0.3",
                **sizes,
                "ready": 1,
                "busy": 0,
                "queued": 5,
            },
        ]


def test_the_pool_is_counted_over_every_node_it_runs_on() -> None:
    status = iris.pool(NodesApi(), "V1.0")  # type: ignore[arg-type]
    # ready and busy are each node's; the queue is the pool's, the same in every entry
    assert (status["ready"], status["busy"], status["queued"]) == (3, 1, 5)
    assert status["initialPoolSize"] == 4
    assert status["nodes"] == ["ssh://root@10.0.0.2", "ssh://root@10.0.0.3"]
