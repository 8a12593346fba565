"""The container chain against the real engine: a hardened container, its agent dials in,
ping round-trips, the container is removed; leftovers of an earlier run are reaped."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from controller.errors import RuntimeFailure
from controller.runtime import agent_bundle
from controller.runtime.docker.containers import DockerContainers
from controller.runtime.docker.environments import DockerEnvironments
from controller.runtime.docker.gateway import DockerGateway
from controller.runtime.docker.image import runtime_tag
from controller.runtime.sandboxes import Sandboxes
from controller.settings import Settings
from tests.conftest import make_settings

pytestmark = pytest.mark.docker


@pytest.fixture
async def sandboxes(settings: Settings) -> Any:
    gateway = await DockerGateway.connect()
    environments = DockerEnvironments(gateway, settings, runtime_tag(settings))
    agent = agent_bundle.stage(settings.data_dir)
    sandboxes = Sandboxes(DockerContainers(gateway, settings), environments, settings, agent)
    yield sandboxes
    await sandboxes.close()
    await gateway.close()


async def test_hardened_container_agent_ping_and_removal(
    sandboxes: Sandboxes, settings: Settings
) -> None:
    sandbox = await sandboxes.launch("probe", owner="admin", ident="chain-test")
    try:
        reply, _ = await sandbox.call("ping", timeout=10)
        assert reply["pong"] is True
        assert sandbox.link.hello["version"] == 2

        attrs = docker.from_env().api.inspect_container(sandbox.handle.engine_id)
        host = attrs["HostConfig"]
        assert attrs["Config"]["User"] == "1000:1000"
        assert host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"][0] == "no-new-privileges"
        assert host["SecurityOpt"][1].startswith("seccomp={")
        assert host["ReadonlyRootfs"] is True
        assert host["Init"] is True
        assert host["PidsLimit"] == settings.container_pids
        assert host["Memory"] == int(settings.container_memory)
        assert host["NanoCpus"] == int(settings.container_cpus * 1e9)
        assert set(host["Tmpfs"]) == {"/work", "/tmp"}
        assert all("size=" in opts for opts in host["Tmpfs"].values())
        assert {u["Name"] for u in host["Ulimits"]} == {"nofile", "fsize"}
        mounts = {m["Destination"]: m for m in attrs["Mounts"]}
        assert set(mounts) == {"/run/o16n", "/opt/o16n-agent"}
        assert not any(m["RW"] for m in mounts.values())
        assert mounts["/opt/o16n-agent"]["Source"] == str(sandboxes.agent_dir)
        assert sandboxes.agent_dir.parent == settings.data_dir / "agent"
        mounts = attrs["Mounts"]
        assert not any("docker.sock" in m["Source"] for m in mounts)
        labels = attrs["Config"]["Labels"]
        assert labels["o16n.instance"] == settings.instance
        assert labels["o16n.kind"] == "probe"
        assert labels["o16n.owner"] == "admin"
        assert labels["o16n.id"] == "chain-test"
        assert labels["o16n.key"] == sandbox.key
        assert attrs["Config"]["Entrypoint"][:2] == ["/opt/o16n/bin/python", "-I"]
    finally:
        await sandboxes.destroy(sandbox)
    assert not docker.from_env().containers.list(all=True, filters={"id": sandbox.handle.engine_id})
    assert not (settings.sockets_dir / sandbox.key).exists()


async def test_leftovers_of_an_earlier_run_are_reaped(sandboxes: Sandboxes) -> None:
    first = await sandboxes.launch("warm")
    second = await sandboxes.launch("warm")
    first.link.close()
    second.link.close()
    owned = await sandboxes.owned()
    assert {h.key for h in owned} >= {first.key, second.key}
    await sandboxes.reap(owned)
    assert await sandboxes.owned() == []
    await sandboxes.reap(owned)  # idempotent: already gone is fine


async def test_a_container_that_cannot_start_its_agent_fails_fast(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    client = docker.from_env()
    bases = [b for b in ("o16n-base:bookworm", "python:3.11-slim") if client.images.list(name=b)]
    assert bases, "no base image to test with"
    started = time.monotonic()
    with pytest.raises(RuntimeFailure) as info:
        # a base image has no /opt/o16n, so no agent can start in it
        await sandboxes.launch("probe", environment=bases[0])
    assert time.monotonic() - started < settings.agent_connect_timeout
    assert "container" in info.value.message
    assert await sandboxes.owned() == []


async def test_a_relative_data_directory_launches(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``O16N_DATA_DIR`` defaults to the relative ``data``: Docker takes only an absolute
    source for a bind mount, and an agent endpoint is an absolute path."""
    monkeypatch.chdir(data_dir)
    settings = make_settings(Path("data"))
    gateway = await DockerGateway.connect()
    environments = DockerEnvironments(gateway, settings, runtime_tag(settings))
    agent = agent_bundle.stage(settings.data_dir)
    sandboxes = Sandboxes(DockerContainers(gateway, settings), environments, settings, agent)
    try:
        sandbox = await sandboxes.launch("probe", ident="relative-data-dir")
        try:
            reply, _ = await sandbox.call("ping", timeout=10)
            assert reply["pong"] is True
        finally:
            await sandboxes.destroy(sandbox)
        assert await sandboxes.owned() == []
    finally:
        await sandboxes.close()
        await gateway.close()


async def test_a_container_without_a_key_never_takes_the_sockets_directory(
    sandboxes: Sandboxes, settings: Settings
) -> None:
    """A container of this instance with no key label (not one of ours: made by hand, say)
    is swept, and the sockets of the containers in use stay."""
    sandbox = await sandboxes.launch("probe", ident="keyless-neighbour")
    stray = docker.from_env().containers.create(
        runtime_tag(settings), ["true"], labels={"o16n.instance": settings.instance}
    )
    try:
        assert await sandboxes.sweep() == 1
        assert (settings.sockets_dir / sandbox.key).is_dir()
        reply, _ = await sandbox.call("ping", timeout=10)
        assert reply["pong"] is True
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            stray.remove(force=True)
        await sandboxes.destroy(sandbox)


class _CreateAfterCancel:
    """The engine's create as the gateway runs it, on a thread that goes on after its caller
    was cancelled; held at a gate so the launch is cancelled before the engine makes it."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self.gate = threading.Event()
        self.made = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    async def create(self, spec: Any) -> Any:
        loop = asyncio.get_running_loop()
        made: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            self.gate.wait(30)
            try:
                handle = asyncio.run_coroutine_threadsafe(self._runtime.create(spec), loop)
                handle = handle.result(30)
                loop.call_soon_threadsafe(_settle, made, handle)
            finally:
                self.made.set()

        threading.Thread(target=work, daemon=True).start()
        return await made


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


async def test_a_launch_cancelled_while_the_engine_creates_leaves_no_container(
    sandboxes: Sandboxes, settings: Settings
) -> None:
    """A warm pool's refill cancelled at shutdown while Docker made its container: the
    launch waits for the container and removes it (no sweep comes after a shutdown)."""
    slow = _CreateAfterCancel(sandboxes.runtime)
    sandboxes.runtime = slow
    launch = asyncio.ensure_future(sandboxes.launch("warm"))
    await asyncio.sleep(0.2)
    launch.cancel()
    await asyncio.sleep(0.1)
    slow.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await launch
    assert await asyncio.to_thread(slow.made.wait, 30)  # the engine has made it by now
    engine = docker.from_env()
    label = f"o16n.instance={settings.instance}"
    assert engine.containers.list(all=True, filters={"label": label}) == []
