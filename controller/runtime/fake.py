"""The fake engine: "containers" that are plain local processes running the real agent.

Like httpx's ``MockTransport``, it is shipped with o16n rather than improvised per test:
:class:`FakeRuntime` implements :class:`~controller.runtime.containers.ContainerRuntime`
and :class:`FakeEnvironments` the
:class:`~controller.runtime.environments.EnvironmentStore`, so the whole application
(sessions, snapshots, services, batch) runs without Docker (``O16N_ENGINE=fake``), over
the very protocol and the very agent the real engine runs.

**It gives NO isolation.** User code runs as the controller's own user, with the
controller's files, network and limits: no seccomp, no namespaces, no memory, pid or disk
caps. It is for tests and development only. It refuses to start unless the controller
listens on loopback only, and says so loudly in the log when it does start.

A "container" is a directory ``<data_dir>/fake-engine/containers/<key>/`` (its state
file, its own working directory ``work/`` and ``tmp/``, the agent's output ``agent.log``)
and, once started, an agent process ``python -I -m o16n_agent`` of the controller's own
interpreter, run from the agent bundle containers mount (``agent_bundle``: the
controller's own agent package), in a session and process group of its own (so a removal
kills whatever user code forked too). The state file keeps pid and start time, so a
restarted controller finds its children again (``list_owned``) and never mistakes a
reused pid for one of them.

Closing: like Docker's containers, the agents outlive :meth:`FakeRuntime.close` (a
restarted controller adopts their sessions); ``close`` logs each one it leaves behind.
:func:`purge` kills every agent under a data directory (tests call it before deleting
one). Environments are opaque references in ``<data_dir>/fake-engine/environments/``:
there is no root filesystem to keep, so every capture is pristine (a snapshot still
carries its workspace, files and objects, in its tarball).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal as signals
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import o16n_agent

from controller.errors import NotFoundError, RuntimeFailure
from controller.runtime.agent_link import SOCKET_NAME
from controller.runtime.containers import ContainerHandle, ExitReport
from controller.runtime.environments import Captured
from controller.runtime.spec import ContainerSpec
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.runtime.engines import Engine

log = logging.getLogger(__name__)

ROOT = "fake-engine"
STATE_FILE = "state.json"
#: the base environment's reference, and the content id every fake environment has
BASE = "o16n-fake:base"
BASE_CONTENT = "fake:runtime"
#: seconds a removal waits for a killed agent to be gone
KILL_WAIT = 10.0
_KEY = re.compile(r"^[0-9a-f]{12,32}$")
_ENV_ID = re.compile(r"^[0-9a-f]{24}$")

#: the agent, from the controller's own installation: ``-I`` ignores PYTHONPATH, so the
#: directory holding ``o16n_agent`` (the bundle containers mount) goes first on its path
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from o16n_agent.agent import main; raise SystemExit(main(sys.argv[1:]))"
)


def agent_command(agent_dir: Path | None, socket_path: Path, workdir: Path) -> list[str]:
    """How a fake container starts its agent: this interpreter, isolated mode, the agent
    from ``agent_dir`` (the staged bundle, ``agent_bundle``), else from the controller's
    own ``o16n_agent``."""
    if agent_dir is None:
        agent_dir = Path(o16n_agent.__file__).resolve().parent.parent
    return [
        sys.executable, "-I", "-c", _BOOT, str(agent_dir),
        "--socket", str(socket_path), "--workdir", str(workdir),
    ]  # fmt: skip


def loopback_only(host: str) -> bool:
    """Whether an HTTP server bound to ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    """The fake engine (``O16N_ENGINE=fake``): refused unless the controller serves
    loopback only. It has no engine facts or image to report (``/status`` and the
    diagnostics say so); the admin endpoints get its agents' memory and CPU."""
    from controller.runtime.engines import Engine

    runtime = FakeRuntime(settings)
    try:
        yield Engine("fake", runtime, FakeEnvironments(settings, runtime), stats=runtime.stats)
    finally:
        await runtime.close()


# --- processes, found again by pid and start time ---------------------------------------


def _start_time(pid: int) -> tuple[str, bool] | None:
    """The start time of process ``pid`` (clock ticks since boot, from /proc) and whether
    it is a zombie; ``None`` when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19], fields[0] == "Z"  # stat fields 22 (starttime) and 3 (state)


def _alive(pid: int, started: str) -> bool:
    """Whether ``pid`` is still the process started at ``started`` and has not ended."""
    found = _start_time(pid)
    return found is not None and found[0] == started and not found[1]


def _reap(pid: int) -> int | None:
    """Collect ``pid``'s exit status if it is our ended child: its exit code as Docker
    reports one (128 + the signal that killed it), else ``None``."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None  # not our child (an earlier controller's), or collected already
    if done == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _usage(pid: int) -> dict[str, Any] | None:
    """Resident memory and CPU seconds (its own and its collected children's) of ``pid``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return {
        "memoryBytes": resident * os.sysconf("SC_PAGE_SIZE"),
        "memoryLimitBytes": None,  # the fake engine sets no limits
        "cpuSeconds": round(ticks / os.sysconf("SC_CLK_TCK"), 3),
        "cpuPercent": None,
    }


def _kill_group(pid: int, started: str) -> None:
    """SIGKILL the process group of agent ``pid`` (every process user code forked), unless
    the pid is another process's now. Also once the agent itself has ended: what it forked
    lives on in its group, which :func:`_left_behind` tells from anyone else's."""
    if pid <= 1:
        return  # never an agent: 0 would be this very process's group
    found = _start_time(pid)
    if found is None and not _left_behind(pid):
        return
    if found is not None and found[0] != started:
        return  # the pid was taken since: the agent and its whole group ended long ago
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signals.SIGKILL)


def _left_behind(pid: int) -> bool:
    """Whether processes are left in the group and session that process ``pid``, ended,
    led. The kernel gives no new process that number while either has a member, so it is
    what an ended agent (``setsid``: its pid is both) forked; a shell's job, whose leader
    may end before the rest of the pipeline, is in its shell's session, never its own."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            fields = text[text.rfind(")") + 2 :].split()
            if fields[2:4] == [str(pid), str(pid)]:  # stat fields 5 (pgrp) and 6 (session)
                return True
    return False


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Replace ``path`` whole (a reader never sees half a file)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(value))
    temporary.replace(path)


def _owned_states(root: Path, instance: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            if not _KEY.match(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            state = _read_json(Path(entry.path) / STATE_FILE)
            if state is not None and state.get("instance") == instance:
                yield Path(entry.path), state


def purge(data_dir: Path) -> int:
    """Kill every agent the fake engine started under ``data_dir`` (any instance) and
    collect those that were this process's children; returns how many were running. For
    tests and scripts that delete a data directory: its agents would dial forever."""
    killed = 0
    containers = data_dir / ROOT / "containers"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(containers):
            state = _read_json(Path(entry.path) / STATE_FILE) or {}
            pid, started = state.get("pid"), state.get("started")
            if not isinstance(pid, int) or not isinstance(started, str):
                continue
            running = _alive(pid, started)
            _kill_group(pid, started)  # also what an agent that ended forked
            if running:
                killed += 1
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
    return killed


# --- the container runtime -----------------------------------------------------------------


@dataclass(eq=False)
class _Agent:
    """An agent process this runtime watches (its child, or an earlier controller's)."""

    key: str
    pid: int
    started: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    exit_code: int | None = None
    watcher: asyncio.Task[None] | None = None


class FakeRuntime:
    """Agents as local processes, one per "container"; see the module's docstring.

    NO ISOLATION: refused unless ``settings.host`` is a loopback address.
    """

    def __init__(self, settings: Settings) -> None:
        if not loopback_only(settings.host):
            raise RuntimeFailure(
                "the fake engine runs user code unconfined as the controller's user: it "
                f"serves loopback only, and O16N_HOST is {settings.host!r}; set "
                "O16N_HOST=127.0.0.1 or choose a real engine"
            )
        try:  # how agents are watched (Linux 5.3 or later)
            os.close(os.pidfd_open(os.getpid()))
        except (AttributeError, OSError) as exc:
            raise RuntimeFailure(f"the fake engine needs pidfds (Linux 5.3+): {exc}") from None
        self._settings = settings
        self._root = settings.data_dir / ROOT / "containers"
        self._agents: dict[str, _Agent] = {}
        self._subscribers: set[asyncio.Queue[str]] = set()
        log.warning(
            "FAKE ENGINE: user code runs as this controller's user with NO isolation "
            "(no container, no limits); for tests and development on loopback only",
            extra={"root": str(self._root)},
        )

    def _dir(self, key: str) -> Path:
        if not _KEY.match(key):
            raise NotFoundError(f"no container {key[:40]!r}")
        return self._root / key

    def places(self) -> list[str]:
        return [""]

    def serving(self, key: str, kind: str) -> None:
        """Nothing to count."""

    async def create(self, spec: ContainerSpec) -> ContainerHandle:
        folder = self._dir(spec.key)
        endpoint = self._endpoint(spec.key)
        state = {
            "instance": spec.instance,
            "key": spec.key,
            "kind": spec.kind,
            "owner": spec.owner,
            "ident": spec.ident,
            "endpoint": endpoint,
            "environment": spec.image,
            "env": dict(spec.environment),
            "agent_dir": str(spec.agent_dir),
            "created": time.time(),
            "pid": None,
            "started": "",
            "exit_code": None,
        }

        def make() -> None:
            folder.mkdir(parents=True, exist_ok=False, mode=0o700)
            (folder / "work").mkdir(mode=0o700)
            (folder / "tmp").mkdir(mode=0o700)
            _write_json(folder / STATE_FILE, state)

        try:
            await asyncio.to_thread(make)
        except FileExistsError:
            raise RuntimeFailure(f"a fake container {spec.key} exists already") from None
        return self._handle(spec.key, state)

    async def start(self, handle: ContainerHandle) -> None:
        folder = self._dir(handle.key)
        state = await asyncio.to_thread(_read_json, folder / STATE_FILE)
        if state is None:
            raise NotFoundError(f"no container {handle.key}")
        if state.get("pid") is not None:
            return  # started already
        work, tmp = folder / "work", folder / "tmp"
        env = {
            **{k: str(v) for k, v in (state.get("env") or {}).items()},
            "HOME": str(work),
            "TMPDIR": str(tmp),
            "MPLCONFIGDIR": str(tmp / "mpl"),
        }
        agent_dir = state.get("agent_dir")
        argv = agent_command(
            Path(agent_dir) if isinstance(agent_dir, str) and agent_dir else None,
            Path(self._endpoint(handle.key).removeprefix("unix:")),
            work,
        )

        def spawn() -> tuple[int, str]:
            log_fd = os.open(folder / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                pid = os.posix_spawn(
                    argv[0],
                    argv,
                    env,
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_DUP2, log_fd, 1),
                        (os.POSIX_SPAWN_DUP2, log_fd, 2),
                    ],
                    setsid=True,  # a session and process group of its own: pgid == pid
                )
            finally:
                os.close(log_fd)
            found = _start_time(pid)
            started = found[0] if found is not None else ""
            _write_json(folder / STATE_FILE, {**state, "pid": pid, "started": started})
            return pid, started

        pid, started = await asyncio.to_thread(spawn)
        self._watch(_Agent(handle.key, pid, started))
        log.info("fake container started", extra={"key": handle.key, "pid": pid})

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        agent = self._agents.get(handle.key)
        if agent is not None and not agent.ended.is_set():
            return None
        state = await asyncio.to_thread(_read_json, self._dir(handle.key) / STATE_FILE)
        if state is None:
            return ExitReport("missing", None, oom_killed=False)
        pid, started = state.get("pid"), str(state.get("started") or "")
        if not isinstance(pid, int):
            return None  # created, not started: Docker counts that as running too
        code = state.get("exit_code")
        if agent is not None:
            # an agent that ended before this runtime watched it was not its child: its
            # exit status is the one its own watcher recorded, if any
            code = agent.exit_code if agent.exit_code is not None else code
        elif await asyncio.to_thread(_alive, pid, started):
            return None
        if isinstance(code, int):
            return ExitReport("exited", code, oom_killed=False)
        return ExitReport("exited", None, False, "it ended while no controller watched it")

    async def signal(self, handle: ContainerHandle, signal: str) -> None:
        """Send ``signal`` (``SIGINT`` or ``INT``) to the agent, as Docker's kill sends it
        to the container's main process."""
        name = signal.upper() if signal.upper().startswith("SIG") else "SIG" + signal.upper()
        try:
            number = signals.Signals[name]
        except KeyError:
            raise RuntimeFailure(f"unknown signal {signal[:20]!r}") from None
        state = await asyncio.to_thread(_read_json, self._dir(handle.key) / STATE_FILE)
        pid = (state or {}).get("pid")
        started = str((state or {}).get("started") or "")
        if not isinstance(pid, int) or not await asyncio.to_thread(_alive, pid, started):
            raise RuntimeFailure(f"container {handle.key} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)

    async def remove(self, handle: ContainerHandle) -> None:
        try:
            folder = self._dir(handle.key)
        except NotFoundError:
            return
        state = await asyncio.to_thread(_read_json, folder / STATE_FILE) or {}
        pid, started = state.get("pid"), str(state.get("started") or "")
        if isinstance(pid, int):
            await asyncio.to_thread(_kill_group, pid, started)
            agent = self._agents.get(handle.key)
            if agent is None:  # an earlier controller's: watch it end
                agent = self._watch(_Agent(handle.key, pid, started), quiet=True)
            if agent.watcher is not None:
                # to its end, which may still be writing the exit into the directory
                await asyncio.wait({agent.watcher}, timeout=KILL_WAIT)
        self._forget(handle.key)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await asyncio.to_thread(shutil.rmtree, self._settings.sockets_dir / handle.key, True)

    async def list_owned(self, instance: str | None = None) -> list[ContainerHandle]:
        """Another instance's only where it shares this one's data directory."""
        found = await asyncio.to_thread(
            lambda: list(_owned_states(self._root, instance or self._settings.instance))
        )
        return [self._handle(path.name, state) for path, state in found]

    async def exits(self) -> AsyncGenerator[tuple[str, bool], None]:
        """Keys of this instance's agents as they end: first those that ended before (or
        while no one watched), then each as its watcher sees it go. Agents an earlier
        controller started are watched from here on."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            for handle in await self.list_owned():
                pid, started = handle.state.get("pid", ""), handle.state.get("started", "")
                if handle.key not in self._agents and pid.isdigit():
                    self._watch(_Agent(handle.key, int(pid), started))
                if await self.poll(handle) is not None and handle.state.get("pid"):
                    yield handle.key, False
            while True:
                yield await queue.get(), False
        finally:
            self._subscribers.discard(queue)

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        """Remove socket directories and container directories no container in use
        names (a create that failed half-way, a crash); returns how many."""
        folders = [self._settings.sockets_dir, self._root]

        def listing() -> list[Path]:
            found = []
            for folder in folders:
                with contextlib.suppress(FileNotFoundError):
                    found += [
                        Path(e.path) for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)
                    ]
            return found

        paths = await asyncio.to_thread(listing)
        stale = [
            p
            for p in paths
            if not in_use(p.name)
            and p.name not in self._agents
            and (p.parent == self._settings.sockets_dir or not (p / STATE_FILE).exists())
        ]
        for path in stale:
            await asyncio.to_thread(shutil.rmtree, path, True)
        return len(stale)

    async def stats(self, ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Memory (resident) and CPU time of each agent, by ``engine_id`` (``None`` for one
        that is not running): the admin endpoints' hook, read from /proc."""

        def one(engine_id: str) -> dict[str, Any] | None:
            key = engine_id.removeprefix("fake-")
            state = (_read_json(self._root / key / STATE_FILE) if _KEY.match(key) else None) or {}
            pid = state.get("pid")
            if not isinstance(pid, int) or not _alive(pid, str(state.get("started") or "")):
                return None
            return _usage(pid)

        return await asyncio.to_thread(lambda: {i: one(i) for i in ids})

    async def close(self) -> None:
        """Stop watching. The agents keep running, as Docker's containers do, so that a
        restarted controller adopts their sessions; each one left is logged (``purge``
        ends them)."""
        running = [a for a in self._agents.values() if not a.ended.is_set()]
        watchers = [a.watcher for a in self._agents.values() if a.watcher is not None]
        for agent in list(self._agents.values()):
            self._forget(agent.key)
        if watchers:  # one cancelled while it kept an exit code ends once that is written
            await asyncio.wait(watchers)
        for agent in running:
            log.warning(
                "fake engine closed: its agent process keeps running",
                extra={"key": agent.key, "pid": agent.pid},
            )

    # --- inner workings ---------------------------------------------------------------

    def _endpoint(self, key: str) -> str:
        return f"unix:{self._settings.sockets_dir / key / SOCKET_NAME}"

    def _handle(self, key: str, state: dict[str, Any]) -> ContainerHandle:
        """The handle of container ``key``: its key (its directory's name) and endpoint are
        ours, never the state file's, which user code, running beside it, can rewrite (the
        controller would listen there: make its directory, unlink and bind its socket)."""
        pid = state.get("pid")
        return ContainerHandle(
            key=key,
            kind=str(state.get("kind", "")),
            owner=str(state.get("owner", "")),
            ident=str(state.get("ident", "")),
            endpoint=self._endpoint(key),
            environment=str(state.get("environment", "")),
            state={
                "id": f"fake-{key}",  # what operators see; the pid changes
                "pid": str(pid) if isinstance(pid, int) else "",
                "started": str(state.get("started") or ""),
            },
        )

    def _watch(self, agent: _Agent, *, quiet: bool = False) -> _Agent:
        self._agents[agent.key] = agent
        agent.watcher = asyncio.get_running_loop().create_task(
            self._wait_end(agent, quiet), name=f"fake-engine-watch-{agent.key}"
        )
        return agent

    def _forget(self, key: str) -> None:
        agent = self._agents.pop(key, None)
        if agent is not None and agent.watcher is not None:
            agent.watcher.cancel()

    async def _wait_end(self, agent: _Agent, quiet: bool) -> None:
        """Wait for ``agent`` to end (a pidfd where the kernel has them, else polling),
        collect its exit status, keep it in its state file and tell every subscriber."""
        await _wait_process(agent.pid, agent.started)
        # an earlier runtime's child in this same process (a restart in a test) is ours
        # to collect too; an earlier controller process's is not (ChildProcessError)
        agent.exit_code = _reap(agent.pid)
        if not quiet:
            # kept before the end is told (``poll``, ``exits``): whoever sees it end, a
            # restarted controller too, reads the file with the exit code in it
            path = self._root / agent.key / STATE_FILE
            record = asyncio.ensure_future(
                asyncio.to_thread(_record_exit, path, agent.pid, agent.exit_code)
            )
            try:
                await asyncio.shield(record)
            except asyncio.CancelledError:
                # its thread writes on: no reader before it; its error (OSError) is as
                # unimportant here, but read, so that asyncio does not log it
                record.add_done_callback(lambda done: done.cancelled() or done.exception())
                await asyncio.wait({record})
                raise
            except OSError:
                pass
        agent.ended.set()
        if not quiet:
            for queue in self._subscribers:
                queue.put_nowait(agent.key)


def _record_exit(path: Path, pid: int, exit_code: int | None) -> None:
    """Keep ``exit_code`` in the state file; an unknown one never replaces a known one
    (an earlier controller's watcher collected the status, a restarted one sees no more)."""
    state = _read_json(path)
    if state is not None and state.get("pid") == pid:
        if exit_code is None and isinstance(state.get("exit_code"), int):
            return
        _write_json(path, {**state, "exit_code": exit_code})


async def _wait_process(pid: int, started: str) -> None:
    """Return once process ``pid`` (started at ``started``) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    try:
        found = _start_time(pid)  # looked at with the fd open: a pidfd of that process
        if found is None or found[0] != started:
            return  # gone, and its pid taken since
        # a pidfd turns readable once its process ends (a zombie's at once)
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, ended)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# --- the environment store ----------------------------------------------------------------


class FakeEnvironments:
    """Opaque references with nothing behind them but a record: the fake engine's
    containers have no root filesystem of their own, so every capture is pristine and
    every environment has the base's content."""

    def __init__(self, settings: Settings, runtime: FakeRuntime | None = None) -> None:
        self._settings = settings
        self._runtime = runtime
        self._root = settings.data_dir / ROOT / "environments"

    @property
    def base(self) -> str:
        return BASE

    def _path(self, ref: str) -> Path | None:
        prefix, _, ident = ref.partition(":")
        if prefix != "o16n-fake" or not _ENV_ID.match(ident):
            return None
        return self._root / f"{ident}.json"

    async def _record(self, ref: str) -> dict[str, Any]:
        path = self._path(ref)
        record = None if path is None else await asyncio.to_thread(_read_json, path)
        if record is None:
            raise NotFoundError(f"environment {ref[:80]!r} not found")
        return record

    async def _new(self, kind: str, labels: dict[str, str], origin: str) -> str:
        ident = secrets.token_hex(12)
        record = {
            "instance": self._settings.instance,
            "kind": kind,
            "labels": dict(labels),
            "origin": origin,
            "made": time.time(),
        }

        def write() -> None:
            self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_json(self._root / f"{ident}.json", record)

        await asyncio.to_thread(write)
        return f"o16n-fake:{ident}"

    async def capture(self, handle: ContainerHandle, kind: str, labels: dict[str, str]) -> Captured:
        if self._runtime is not None:
            report = await self._runtime.poll(handle)
            if report is not None and report.status == "missing":
                raise NotFoundError(f"no container {handle.key}")
        try:
            origin = await self.origin(handle.environment or BASE)
        except NotFoundError:
            origin = BASE_CONTENT  # released since it started: the content is the same
        return Captured(await self._new(kind, labels, origin), pristine=True)

    async def keep(self, ref: str, kind: str) -> str:
        return await self._new(kind, {}, await self.origin(ref))

    async def release(self, ref: str) -> bool:
        path = self._path(ref)
        if path is None:
            return True  # the base, or nothing of ours
        if self._runtime is not None:
            for handle in await self._runtime.list_owned():
                if handle.environment == ref and await self._runtime.poll(handle) is None:
                    return False
        await asyncio.to_thread(path.unlink, True)
        return True

    async def resolve(self, ref: str) -> str:
        if ref != BASE:
            await self._record(ref)
        return ref

    async def origin(self, ref: str) -> str:
        if ref == BASE:
            return BASE_CONTENT
        return str((await self._record(ref)).get("origin") or BASE_CONTENT)

    async def sweep(self, keep: set[str], min_age: float = 0.0) -> int:
        def listing() -> list[tuple[str, dict[str, Any]]]:
            found = []
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self._root):
                    ident = entry.name.removesuffix(".json")
                    record = _read_json(Path(entry.path)) if _ENV_ID.match(ident) else None
                    if record is not None:
                        found.append((f"o16n-fake:{ident}", record))
            return found

        before = time.time() - min_age
        released = 0
        for ref, record in await asyncio.to_thread(listing):
            made = record.get("made")
            if (
                ref not in keep
                and record.get("instance") == self._settings.instance
                and isinstance(made, int | float)
                and made <= before
                and await self.release(ref)
            ):
                released += 1
        return released
