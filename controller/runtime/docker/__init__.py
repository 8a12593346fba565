"""The Docker engine: everything o16n knows of Docker, and the only place that talks to it.

* ``gateway``       every Docker API call, async, on bounded executors
* ``containers``    the container runtime (``ContainerRuntime``), the hardened
                    ``docker_kwargs`` and the seccomp profile
* ``environments``  the environment store (``EnvironmentStore``): images, by name
* ``nodes``         compute nodes: the runtime and the store over several engines, placement,
                    probes, a lost node's containers (``NodeControl``)
* ``remote``, ``ssh``  a node reached over SSH: its engine, files and agents' sockets
* ``image_moves``   an image copied from one node's engine to another's
* ``image``         the runtime image: its content-hash tag and its build
* ``runc``          whether the engine's runc is fixed for CVE-2024-21626
* ``stats``         memory and CPU of containers, disk use of the engine
* ``admin``         what the engine tells the operator (``/status``, ``/admin/node``)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from controller.errors import O16nError
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.runtime.engines import Engine

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """Connect to the engine (``DOCKER_HOST``), judge its runc, check the runtime image;
    close the connection at exit (containers keep running)."""
    from controller.runtime.docker import runc
    from controller.runtime.docker.admin import DockerReport
    from controller.runtime.docker.containers import DockerContainers
    from controller.runtime.docker.environments import DockerEnvironments
    from controller.runtime.docker.gateway import DockerGateway
    from controller.runtime.docker.image import runtime_tag
    from controller.runtime.docker.nodes import DockerNodes, NodeEnvironments
    from controller.runtime.docker.ssh import ensure_client_key
    from controller.runtime.docker.stats import StatsSampler
    from controller.runtime.engines import Engine

    gateway = await DockerGateway.connect(settings.docker_workers, settings.docker_slow_workers)
    try:
        info = await gateway.info()
        log.info("docker engine connected", extra={"version": info.version})
        verdict = await runc.check(gateway)
        image = runtime_tag(settings)
        if not await gateway.image_exists(image):
            log.error("runtime image missing; build it with `make image`", extra={"image": image})
        containers = DockerContainers(gateway, settings)
        environments = DockerEnvironments(gateway, settings, image)
        sampler = StatsSampler(gateway)
        report = DockerReport(gateway, environments, sampler, settings.instance)

        def key_file() -> Path:
            """The controller's SSH key: ``O16N_SSH_KEY``, else one generated once."""
            if settings.ssh_key is not None:
                return settings.ssh_key
            path = settings.data_dir.absolute() / "ssh" / "id_ed25519"
            ensure_client_key(path)
            return path

        if settings.ssh_key is None:  # made now, so /admin/nodes shows it before any node
            try:
                await asyncio.to_thread(key_file)
            except (OSError, subprocess.SubprocessError, O16nError) as exc:  # no ssh-keygen
                log.warning("no SSH key for compute nodes yet", extra={"error": str(exc)})
        nodes = DockerNodes(settings, gateway, containers, environments, key_file)
        try:
            await nodes.begin()
            yield Engine(
                "docker",
                nodes,
                NodeEnvironments(nodes, environments),
                about=report.about,
                base_size=report.base_size,
                checks={"runc": verdict.node()},
                node=report.node,
                stats=sampler.sample,
                nodes=nodes,
            )
        finally:
            await nodes.close()
    finally:
        await gateway.close()
