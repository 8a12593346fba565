"""One engine under two addresses is one node: the second is refused while the first holds
it, and a node let go of (lost, refused) no longer holds it."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import RuntimeFailure
from controller.runtime.docker import open_engine
from controller.runtime.docker.nodes import DockerNodes, Node, control_path
from controller.runtime.nodes import parse_node
from tests.conftest import make_settings


async def test_a_node_let_go_of_no_longer_holds_its_engine() -> None:
    nodes = DockerNodes.__new__(DockerNodes)  # only the bookkeeping of claims
    first = Node("a", parse_node("ssh://o16n@node-a"), engine="engine-1|host|/var/lib/docker")
    second = Node("b", parse_node("ssh://o16n@10.0.0.7"), engine=first.engine)
    nodes._nodes = {"a": first, "b": second}
    with pytest.raises(RuntimeFailure, match="same Docker engine"):
        nodes._claim(second)
    await nodes._disconnect(second)  # refused: let go of, to be tried again later
    await nodes._disconnect(first)  # then the first is lost
    first.engine = "engine-1|host|/var/lib/docker"  # and comes back: its own engine again
    nodes._claim(first)


@pytest.mark.docker
async def test_an_engine_closed_leaves_no_control_directory(data_dir: Path) -> None:
    """Every start of a controller makes its SSH control directory in /tmp: closing takes
    it away again when no master is left in it."""
    settings = make_settings(data_dir, engine="docker")
    async with open_engine(settings):
        assert control_path(data_dir).is_dir()
    assert not control_path(data_dir).exists()
