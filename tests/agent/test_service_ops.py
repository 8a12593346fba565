"""A service container's warm-up (``ServiceOps.init``), in-process."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from o16n_agent.service import ServiceOps


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process keeps collecting what it made


def test_what_the_warm_up_made_is_out_of_the_collectors_sight(
    tmp_path: Path, unfrozen: None
) -> None:
    ops = ServiceOps(str(tmp_path), lambda running: None)
    reply, _ = ops.init(
        {
            "inputs": [{"name": "x", "type": "numeric"}],
            "outputs": [{"name": "y", "type": "numeric"}],
            "init_code": "model = [{'weight': i} for i in range(10_000)]",
            "code": "y = x * model[2]['weight']",
        },
        None,
    )
    assert reply["init_error"] == ""
    assert gc.get_freeze_count() >= 10_000  # the model's dicts among them
    result, _ = ops.run({"inputs": {"x": 3}}, None)
    assert result["success"] and result["outputs"] == {"y": 6}
