"""An engine that is away (a lost compute node's forwarded socket) is asked again and again
by probes and polls: each failed connect must close its socket, not leave it to the garbage
collector (a ResourceWarning each time, which docker-py 7 does)."""

from __future__ import annotations

import gc
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
