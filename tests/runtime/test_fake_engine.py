"""The fake engine drives the real agent, as local processes, through the runtime protocols:
launch and talk over a real ``AgentListener``, interrupt, exit reports, removal of the whole
process group, and finding its agents again after a restart. No Docker anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import o16n_agent
import pytest
from o16n_agent import protocol

from controller.errors import AgentGone, NotFoundError, RuntimeFailure
from controller.runtime import agent_bundle, fake
from controller.runtime.agent_link import AgentLink, AgentListener
from controller.runtime.containers import ContainerHandle, ContainerRuntime
from controller.runtime.environments import EnvironmentStore
from controller.runtime.spec import ContainerSpec, Kind
from controller.settings import Settings
from tests.conftest import make_settings

LIMIT = 1 << 20


@pytest.fixture
def settings(data_dir: Path) -> Iterator[Settings]:
    yield make_settings(data_dir)
    fake.purge(data_dir)  # whatever a failed test left running


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[fake.FakeRuntime]:
    runtime = fake.FakeRuntime(settings)
    yield runtime
    await runtime.close()


class Launched:
    """A started fake container and the listener its agent dialled."""

    def __init__(self, handle: ContainerHandle, listener: AgentListener) -> None:
        self.handle = handle
        self.listener = listener

    async def link(self) -> AgentLink:
        return await self.listener.wait_link(20)


#: every listener a test opened, closed after it whatever happened
LISTENERS: list[AgentListener] = []


@pytest.fixture(autouse=True)
async def _close_listeners() -> AsyncIterator[None]:
    yield
    while LISTENERS:
        await LISTENERS.pop().close()


def listener_for(handle: ContainerHandle) -> AgentListener:
    scheme, _, path = handle.endpoint.partition(":")
    assert scheme == "unix"
    listener = AgentListener(Path(path).parent, LIMIT, LIMIT)
    LISTENERS.append(listener)
    return listener


def spec_for(settings: Settings, image: str = fake.BASE, kind: Kind = "session") -> ContainerSpec:
    return ContainerSpec.from_settings(
        settings,
        image=image,
        key=secrets.token_hex(8),
        kind=kind,
        owner="alice",
        agent_dir=agent_bundle.stage(settings.data_dir),
    )


async def launch(runtime: ContainerRuntime, settings: Settings, kind: Kind = "session") -> Launched:
    spec = spec_for(settings, kind=kind)
    handle = await runtime.create(spec)
    listener = listener_for(handle)
    await listener.start()  # the caller listens before start, as the protocol says
    await runtime.start(handle)
    return Launched(handle, listener)


async def finish(runtime: ContainerRuntime, launched: Launched) -> None:
    """Ends a launched container: its listener closed first, then the container removed."""
    await launched.listener.close()
    await runtime.remove(launched.handle)


async def execute(link: AgentLink, code: str, **call: Any) -> dict[str, Any]:
    reply, _ = await link.call("execute", {"code": code}, timeout=call.pop("timeout", 20), **call)
    return reply


async def fork_sleeper(link: AgentLink) -> int:
    """The pid of a process user code forks, which would sleep on past its container."""
    code = "import subprocess\nchild = subprocess.Popen(['sleep', '300'])\nprint(child.pid)"
    return int((await execute(link, code))["console"])


async def killed_with_its_container(pid: int) -> None:
    """Fails unless ``pid``, SIGKILLed with its process group, is gone (or a zombie) within
    five seconds."""
    for _ in range(100):
        state = fake._start_time(pid)
        if state is None or state[1]:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"process {pid} forked by user code outlived its container")


async def next_exit(exits: Any, key: str) -> None:
    async with asyncio.timeout(10):
        async for ended, _ in exits:
            if ended == key:
                return


async def test_the_real_agent_of_the_controller_answers_over_the_protocol(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    launched = await launch(runtime, settings)
    link = await launched.link()
    assert link.hello["version"] == protocol.VERSION
    reply, _ = await link.call("ping", timeout=10)
    assert reply["pong"] is True
    result = await execute(link, "import o16n_agent, os\nprint(o16n_agent.__file__)\nx = 6 * 7")
    assert result["success"], result
    # the bundle of the controller's own agent package (what containers mount), whatever
    # the interpreter would find by itself
    bundle = agent_bundle.stage(settings.data_dir)
    assert result["console"].strip() == str(bundle / "o16n_agent" / "__init__.py")
    assert bundle.name == agent_bundle.digest(
        agent_bundle.package_files(Path(o16n_agent.__file__).parent)
    )
    assert await runtime.poll(launched.handle) is None
    assert launched.handle.environment == fake.BASE
    (owned,) = await runtime.list_owned()
    assert owned.key == launched.handle.key
    assert owned.state["pid"].isdigit()  # known once started: list_owned reads it back
    ident = owned.state["id"]
    usage = (await runtime.stats([ident, "fake-0123456789ab", "nonsense"]))[ident]
    assert usage is not None
    assert usage["memoryBytes"] > 1_000_000
    assert usage["cpuSeconds"] > 0
    await finish(runtime, launched)


async def test_each_container_works_in_a_directory_of_its_own(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    one, two = await launch(runtime, settings), await launch(runtime, settings)
    code = "import os\nopen('mine.txt', 'w').write('x')\nprint(os.getcwd(), sorted(os.listdir()))"
    first = (await execute(await one.link(), code))["console"].split()
    second = await execute(await two.link(), "import os\nprint(os.getcwd(), os.listdir())")
    assert first[1:] == ["['mine.txt']"]
    assert second["console"].split()[1:] == ["[]"]
    assert first[0] != second["console"].split()[0]
    for launched in (one, two):
        await finish(runtime, launched)
        assert not Path(first[0]).exists() or launched is two


async def test_an_interrupt_signal_stops_the_running_code_and_the_agent_lives_on(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    launched = await launch(runtime, settings)
    link = await launched.link()

    async def interrupt() -> None:
        await runtime.signal(launched.handle, "SIGINT")

    result = await execute(
        link, "import time\ntime.sleep(60)", timeout=1.0, on_timeout=interrupt, grace=10
    )
    assert result["cancelled"] is True
    assert not result["success"]
    assert await runtime.poll(launched.handle) is None
    assert (await execute(link, "print('still here')"))["console"] == "still here\n"
    await finish(runtime, launched)


async def test_an_agent_that_exits_is_reported_with_its_code(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    exits = runtime.exits()
    launched = await launch(runtime, settings)
    link = await launched.link()
    with pytest.raises(AgentGone):
        await execute(link, "import os\nos._exit(3)")
    await next_exit(exits, launched.handle.key)
    report = await runtime.poll(launched.handle)
    assert report is not None
    assert (report.status, report.exit_code) == ("exited", 3)

    killed = await launch(runtime, settings)
    await killed.link()
    await runtime.signal(killed.handle, "KILL")
    await next_exit(exits, killed.handle.key)
    report = await runtime.poll(killed.handle)
    assert report is not None
    assert report.exit_code == 137
    assert report.describe() == "the container was killed by signal 9"
    await exits.aclose()
    for one in (launched, killed):
        await finish(runtime, one)


async def test_remove_kills_what_user_code_forked_and_leaves_nothing(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    launched = await launch(runtime, settings)
    link = await launched.link()
    grandchild = await fork_sleeper(link)
    folder = settings.data_dir / fake.ROOT / "containers" / launched.handle.key
    assert (folder / "work").is_dir()
    await finish(runtime, launched)
    assert not folder.exists()
    assert not (settings.sockets_dir / launched.handle.key).exists()
    report = await runtime.poll(launched.handle)
    assert report is not None
    assert report.status == "missing"
    await killed_with_its_container(grandchild)
    await runtime.remove(launched.handle)  # idempotent
    assert await runtime.list_owned() == []
    with pytest.raises(RuntimeFailure):
        await runtime.signal(launched.handle, "SIGINT")


async def test_remove_kills_what_user_code_forked_after_the_agent_itself_ended(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    """An agent that ended (user code called ``os._exit``) leaves what it forked in its
    process group: removing its container still kills them, as Docker's removal does."""
    exits = runtime.exits()
    launched = await launch(runtime, settings)
    link = await launched.link()
    grandchild = await fork_sleeper(link)
    forked = fake._start_time(grandchild)
    assert forked is not None
    try:
        with pytest.raises(AgentGone):
            await execute(link, "import os\nos._exit(3)")
        await next_exit(exits, launched.handle.key)  # ended, and collected by its watcher
        assert fake._start_time(grandchild) == forked  # what it forked lives on
        await finish(runtime, launched)
        await killed_with_its_container(grandchild)
    finally:
        await exits.aclose()
        state = fake._start_time(grandchild)
        if state is not None and state[0] == forked[0] and not state[1]:
            os.kill(grandchild, signal.SIGKILL)  # leave nothing behind, whatever failed


async def test_a_restarted_controller_finds_its_agents_and_talks_to_them_again(
    settings: Settings,
) -> None:
    first = fake.FakeRuntime(settings)
    launched = await launch(first, settings)
    link = await launched.link()
    await execute(link, "x = 41")
    created = await launch(first, settings)  # and one nobody talked to
    await launched.listener.close()
    await created.listener.close()
    await first.close()  # the agents keep running, as Docker's containers do

    second = fake.FakeRuntime(settings)
    owned = {h.key: h for h in await second.list_owned()}
    assert set(owned) == {launched.handle.key, created.handle.key}
    again = owned[launched.handle.key]
    assert (again.endpoint, again.kind, again.owner) == (
        launched.handle.endpoint,
        "session",
        "alice",
    )
    assert again.state["pid"].isdigit()
    assert again.state["started"]  # with the pid: a reused pid is never taken for it
    listener = listener_for(again)
    await listener.start()
    relinked = await listener.wait_link(20)  # the agent dials the new listener
    assert (await execute(relinked, "print(x + 1)"))["console"] == "42\n"
    assert await second.poll(again) is None

    exits = second.exits()
    await second.signal(again, "SIGTERM")  # the agent exits 0 on SIGTERM
    await next_exit(exits, again.key)
    report = await second.poll(again)
    assert report is not None
    assert report.status == "exited"
    await exits.aclose()
    await listener.close()
    for handle in owned.values():
        await second.remove(handle)
    assert await second.list_owned() == []
    await second.close()


async def test_a_restarted_controller_keeps_the_exit_code_of_an_agent_that_ended_before(
    settings: Settings,
) -> None:
    first = fake.FakeRuntime(settings)
    exits = first.exits()
    launched = await launch(first, settings)
    with pytest.raises(AgentGone):
        await execute(await launched.link(), "import os\nos._exit(3)")
    await next_exit(exits, launched.handle.key)  # collected, its status recorded
    await exits.aclose()
    await launched.listener.close()
    await first.close()

    second = fake.FakeRuntime(settings)
    (handle,) = await second.list_owned()
    exits = second.exits()
    await next_exit(exits, handle.key)  # ended before: told at once
    report = await second.poll(handle)
    assert report is not None
    assert (report.status, report.exit_code) == ("exited", 3)
    await exits.aclose()
    await second.remove(handle)
    await second.close()


async def test_an_exit_is_told_only_once_its_code_is_kept(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keeping the exit code is slowed: a restarted controller that adopts the agent the
    moment its end is seen must still read the code, not race the write with its own."""
    write = fake._write_json

    def slow_write(path: Path, value: dict[str, Any]) -> None:
        if "exit_code" in value:
            time.sleep(0.5)
        write(path, value)

    monkeypatch.setattr(fake, "_write_json", slow_write)
    await test_a_restarted_controller_keeps_the_exit_code_of_an_agent_that_ended_before(settings)


async def test_a_restarted_controller_takes_no_path_from_what_user_code_can_rewrite(
    settings: Settings,
) -> None:
    """The state file lies beside the agent's working directory: a restarted controller
    takes its key and the endpoint it listens at (makes, unlinks, binds) from its own."""
    first = fake.FakeRuntime(settings)
    launched = await launch(first, settings)
    victim = settings.data_dir / "victim" / "agent.sock"
    code = (
        "import json\nstate = json.load(open('../state.json'))\n"
        f"state.update(endpoint='unix:{victim}', key='ffffffffffff')\n"
        "json.dump(state, open('../state.json', 'w'))"
    )
    assert (await execute(await launched.link(), code))["success"]
    await launched.listener.close()
    await first.close()

    second = fake.FakeRuntime(settings)
    (handle,) = await second.list_owned()
    assert (handle.key, handle.endpoint) == (launched.handle.key, launched.handle.endpoint)
    assert handle.engine_id == launched.handle.engine_id
    await second.remove(handle)
    assert await second.list_owned() == []
    await second.close()


async def test_another_instance_sharing_the_data_directory_is_not_listed(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    launched = await launch(runtime, settings)
    other = fake.FakeRuntime(make_settings(settings.data_dir))
    assert await other.list_owned() == []
    assert [h.key for h in await runtime.list_owned()] == [launched.handle.key]
    await finish(runtime, launched)


async def test_sweep_removes_only_what_no_container_uses(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    launched = await launch(runtime, settings)
    stale_socket = settings.sockets_dir / "0123456789ab"
    stale_socket.mkdir(parents=True)
    half_made = settings.data_dir / fake.ROOT / "containers" / "ba9876543210"
    half_made.mkdir(parents=True)
    assert await runtime.sweep(lambda key: key == launched.handle.key) == 2
    assert not stale_socket.exists()
    assert not half_made.exists()
    assert (settings.sockets_dir / launched.handle.key).exists()
    await finish(runtime, launched)


def test_the_fake_engine_refuses_to_serve_beyond_loopback(data_dir: Path) -> None:
    for host in ("0.0.0.0", "192.168.1.2", "::", "example.org"):
        with pytest.raises(RuntimeFailure, match="loopback"):
            fake.FakeRuntime(make_settings(data_dir, host=host))
    for host in ("127.0.0.1", "::1", "localhost"):
        assert fake.loopback_only(host)


async def test_close_names_every_agent_it_leaves_running(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = fake.FakeRuntime(settings)
    launched = await launch(runtime, settings)
    await launched.link()
    await launched.listener.close()
    await runtime.close()
    left = [r for r in caplog.records if "keeps running" in r.getMessage()]
    assert [getattr(r, "key", None) for r in left] == [launched.handle.key]
    assert fake.purge(settings.data_dir) == 1
    assert fake.purge(settings.data_dir) == 0


async def test_environments_are_opaque_references_captured_pristine(
    runtime: fake.FakeRuntime, settings: Settings
) -> None:
    store: EnvironmentStore = fake.FakeEnvironments(settings, runtime)
    launched = await launch(runtime, settings)
    captured = await store.capture(launched.handle, "snapshot", {"o16n.id": "s1"})
    assert captured.pristine
    assert captured.ref != store.base
    assert await store.resolve(captured.ref) == captured.ref
    service = await store.keep(captured.ref, "service")
    assert await store.origin(service) == await store.origin(store.base)
    assert await store.release(captured.ref)
    assert await store.resolve(service) == service  # a kept reference outlives its source
    with pytest.raises(NotFoundError):
        await store.resolve(captured.ref)
    with pytest.raises(NotFoundError):
        await store.keep(captured.ref, "service")
    with pytest.raises(NotFoundError):
        await store.resolve("o16n-fake:../../etc")

    # an environment a running container was launched on is kept until it ends
    spec = spec_for(settings, await store.resolve(service), "service")
    on_service = await runtime.create(spec)
    listener = listener_for(on_service)
    await listener.start()
    await runtime.start(on_service)
    assert not await store.release(service)
    assert await store.sweep(set()) == 0
    await listener.close()
    await runtime.remove(on_service)
    assert await store.sweep({service}) == 0
    assert await store.sweep(set(), min_age=3600) == 0
    assert await store.sweep(set()) == 1
    assert await store.resolve(store.base) == store.base
    await finish(runtime, launched)
    with contextlib.suppress(NotFoundError):
        await store.capture(launched.handle, "snapshot", {})
        pytest.fail("a removed container cannot be captured")
    assert os.listdir(settings.data_dir / fake.ROOT / "environments") == []
