"""Fixtures for tests with compute nodes: real Docker engines reached over SSH.

``compute_nodes`` gives two nodes (:mod:`tests.nodes.engines`), started once per test
process and side by side, with the runtime image of this tree loaded into each. Tests that
use it are ``docker`` tests like the others (mark the module ``pytestmark =
pytest.mark.docker``): ``pytest -m "not docker"`` never starts a node. The nodes need root
(namespaces, veth pairs, daemons) and sshd (``make nodes``); without them the tests skip,
saying why.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.runtime.docker.image import default_tag
from tests.nodes import engines


def _log(message: str) -> None:
    print(f"compute nodes: {message}", file=sys.stderr)


def nodes_unavailable() -> str | None:
    """Why nodes cannot start here, or None."""
    if os.geteuid() != 0:
        return "compute nodes need root (network namespaces, veth pairs, their own dockerd)"
    missing = [
        tool
        for tool in ("ip", "nsenter", "ssh", "ssh-keygen", "dockerd", "containerd")
        if shutil.which(tool) is None
    ]
    if not Path(engines.SSHD).exists():
        missing.append(engines.SSHD)
    if missing:
        return f"compute nodes need {', '.join(missing)} (`make nodes` installs them)"
    return None


@pytest.fixture(scope="session")
def compute_nodes(
    runtime_image: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[engines.Node]]:
    """Two started compute nodes with the runtime image loaded, taking one client key
    (``node.client_key``, as a controller has one ``O16N_SSH_KEY``); stopped at the end of
    the run, whatever the tests did (their containers go with them)."""
    reason = nodes_unavailable()
    if reason:
        pytest.skip(reason)
    for name in engines.sweep_stale(_log):
        _log(f"swept {name}, left by a test run that died")
    key = engines.make_key(tmp_path_factory.mktemp("nodes-ssh") / "id_ed25519")
    with engines.running_nodes(2, _log, client_key=key) as nodes:
        seconds = engines.load_image(nodes, default_tag())
        _log(f"runtime image loaded into {len(nodes)} nodes in {seconds:.1f} s")
        yield nodes


@pytest.fixture(scope="session")
def compute_nodes_known_hosts(
    compute_nodes: list[engines.Node], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One ``known_hosts`` pinning both nodes' host keys (``O16N_SSH_KNOWN_HOSTS``)."""
    return engines.write_known_hosts(
        compute_nodes, tmp_path_factory.mktemp("nodes-known") / "known_hosts"
    )


@pytest.fixture(autouse=True)
def _links_restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every node's link is up again after each test that used the nodes, whatever the test
    cut and however it ended: the next test starts from connected nodes."""
    yield
    if "compute_nodes" in request.fixturenames:
        for node in request.getfixturevalue("compute_nodes"):
            node.restore_link()
