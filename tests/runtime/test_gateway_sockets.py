"""An engine that is away (a lost compute node's forwarded socket) is asked again and again
by probes and polls: each failed connect must close its socket, not leave it to the garbage
collector (a ResourceWarning each time, which docker-py 7 does)."""

from __future__ import annotations

import asyncio
import gc
import time
import warnings
from pathlib import Path

import pytest

from controller.errors import EngineUnavailable
from controller.runtime.docker.gateway import DockerGateway


async def test_a_failed_connect_to_an_absent_engine_closes_its_socket(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for _ in range(3):
            with pytest.raises(EngineUnavailable):
                await DockerGateway.connect(1, 1, base_url=f"unix://{tmp_path}/absent.sock")
        gc.collect()  # an unclosed socket warns here, and the test's warnings filter fails it


@pytest.mark.docker
async def test_calls_on_a_gateway_let_go_of_fail_as_unavailable_not_cancelled() -> None:
    """A lost node's gateway is closed while requests still wait for its threads: they
    hear that the engine is unavailable; a cancellation nobody asked for would drop a
    client's connection or end a batch worker."""
    gateway = await DockerGateway.connect(1, 1)
    running = asyncio.ensure_future(gateway._run(time.sleep, 0.5))
    waiting = asyncio.ensure_future(gateway._run(time.sleep, 0))
    await asyncio.sleep(0.05)
    await gateway.close()
    with pytest.raises(EngineUnavailable):
        await waiting
    with pytest.raises(EngineUnavailable):
        await gateway._run(time.sleep, 0)
    await running  # the call under way ends as it would
