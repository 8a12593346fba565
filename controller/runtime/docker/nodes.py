"""Compute nodes: this instance's containers spread over several Docker engines.

``DockerNodes`` is the Docker engine's ``ContainerRuntime`` and ``NodeControl``: one
``DockerContainers`` per node (the local engine, the default node, first), new containers
placed on the least-loaded node that is up and not draining, every later call sent to the
node a handle names (``state["node"]``; none: the local node). ``NodeEnvironments`` is its
``EnvironmentStore``: images live on the node that made them and are copied to another
when a container placed there needs them (``image_moves``).

A remote node has a keeper task: it connects (``remote.RemoteNode`` for ``ssh://``, the
engine's socket for ``unix://``), then probes it every ``O16N_NODE_PROBE_SECONDS``. Two
failed probes, or the end of its SSH connection, and the node is **lost**: its containers
are reported as ended ("compute node lost", so their sessions answer 410 and service pools
replace theirs) and nothing more is placed there. The keeper keeps reconnecting; when the
node is back, every container of this instance on it is removed before it takes new ones,
so no session comes back to life. See docs/compute-nodes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from controller.errors import EngineUnavailable, NotFoundError, O16nError, RuntimeFailure
from controller.runtime import agent_bundle
from controller.runtime.containers import ContainerHandle, ExitReport
from controller.runtime.docker.containers import DockerContainers, LocalFiles, is_key
from controller.runtime.docker.environments import DockerEnvironments
from controller.runtime.docker.gateway import DockerGateway, dockerfile_safe
from controller.runtime.docker.image_moves import copy_image, layers_or_none
from controller.runtime.docker.remote import RemoteNode
from controller.runtime.environments import Captured
from controller.runtime.nodes import LOCAL, NodeAddress
from controller.runtime.spec import LABEL_PREFIX, ContainerSpec
from controller.settings import Settings, usable_cores

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_FAILURES = 2  # consecutive failed probes that make a node lost
PROBE_TIMEOUT = 5.0  # seconds a probe may take (a busy machine answers slowly, not never)
RECONNECT_FIRST = 1.0  # seconds before reconnecting to a lost node, doubling
RECONNECT_MAX = 30.0
FIRST_CONNECT_WAIT = 20.0  # seconds ``apply`` waits for a new node's first connection
REMOTE_TIMEOUT = 60  # seconds of one engine call to a remote node


@dataclass(eq=False)
class Node:
    """One engine and what this controller knows of it."""

    name: str
    address: NodeAddress | None  # None: the local engine
    containers: DockerContainers | None = None
    environments: DockerEnvironments | None = None
    gateway: DockerGateway | None = None
    remote: RemoteNode | None = None
    state: str = "connecting"  # connecting | up | lost | removed
    draining: bool = False
    error: str = ""
    version: str = ""
    cpus: int = 1
    engine: str = ""  # which engine it is (``_identity``)
    since: float = field(default_factory=time.time)
    #: this instance's containers here, by key, with their kind
    keys: dict[str, str] = field(default_factory=dict)
    #: keys given up when the node was lost: their containers go when it is back
    lost: set[str] = field(default_factory=set)
    #: images copied here from other nodes, and the bytes their archives took
    copied: int = 0
    copied_bytes: int = 0
    keeper: asyncio.Task[None] | None = None
    follower: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def entry(self) -> str:
        return self.address.entry if self.address is not None else LOCAL

    @property
    def usable(self) -> bool:
        return self.state == "up" and not self.draining and self.containers is not None


class DockerNodes:
    """The container runtime over every node, and the operator's control of the nodes."""

    def __init__(
        self,
        settings: Settings,
        gateway: DockerGateway,
        containers: DockerContainers,
        environments: DockerEnvironments,
        key_file: Callable[[], Path],
    ) -> None:
        self._settings = settings
        self._base = environments.base
        self._key_file = key_file
        local = Node(LOCAL, None, containers, environments, gateway, state="up")
        local.cpus = usable_cores()
        self._nodes: dict[str, Node] = {LOCAL: local}
        self._where: dict[str, str] = {}  # container key -> node name
        self._exits: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self._control_dir = control_dir(settings.data_dir)
        self._spool = settings.data_dir.absolute() / "spool"
        self._moves: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._apply_lock = asyncio.Lock()
        local.follower = asyncio.create_task(self._follow(local), name="exits:local")

    # --- placement ------------------------------------------------------------------------

    def _ranked(self) -> list[Node]:
        """The usable nodes, the least loaded first (this instance's containers per CPU;
        ties: the order of the list, the local node first)."""
        usable = [node for node in self._nodes.values() if node.usable]
        return sorted(usable, key=lambda node: len(node.keys) / max(node.cpus, 1))

    def _place(self, wanted: str | None = None) -> Node:
        """The node ``wanted`` names if it is usable, else the least loaded."""
        ranked = self._ranked()
        if not ranked:
            raise EngineUnavailable("no compute node is up and taking containers")
        return next((node for node in ranked if _place_of(node) == wanted), ranked[0])

    def places(self) -> list[str]:
        return [_place_of(node) for node in self._ranked()]

    def _node_of(self, handle: ContainerHandle) -> Node | None:
        return self._nodes.get(handle.place or LOCAL)

    def node_of(self, handle: ContainerHandle) -> str:
        """The entry of the node a container runs on (shown to operators)."""
        node = self._node_of(handle)
        return node.entry if node is not None else handle.state.get("node", "")

    # --- ContainerRuntime -----------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> ContainerHandle:
        node = self._place(spec.place)
        containers = node.containers  # this connection's, even if the node is lost meanwhile
        assert containers is not None
        # counted toward the node's load before anything is awaited: creates placed at once
        # (a pool starting several) see each other
        node.keys[spec.key] = spec.kind
        self._where[spec.key] = node.name
        try:
            if spec.image != self._base:
                await self._ensure_image(node, spec.image)
            return await containers.create(spec)
        except BaseException:
            node.keys.pop(spec.key, None)
            self._where.pop(spec.key, None)
            raise

    def serving(self, key: str, kind: str) -> None:
        node = self._nodes.get(self._where.get(key, ""))
        if node is not None and key in node.keys:
            node.keys[key] = kind

    async def start(self, handle: ContainerHandle) -> None:
        await self._live(handle).start(handle)

    async def poll(self, handle: ContainerHandle) -> ExitReport | None:
        node = self._node_of(handle)
        if node is None or node.state in ("lost", "removed") or handle.key in node.lost:
            entry = node.entry if node is not None else handle.state.get("node", "")
            return ExitReport("lost", None, oom_killed=False, error=entry)
        if node.containers is None:
            return None  # connecting: nothing known yet
        try:
            return await node.containers.poll(handle)
        except EngineUnavailable:
            if node.address is None:
                raise  # the local engine restarting: its containers are found again
            # a remote engine that does not answer while asked about a container (its agent's
            # link broke, say): given up now, as its node will be, removed when it is back
            node.lost.add(handle.key)
            return ExitReport("lost", None, oom_killed=False, error=node.entry)

    async def signal(self, handle: ContainerHandle, signal: str) -> None:
        await self._live(handle).signal(handle, signal)

    async def remove(self, handle: ContainerHandle) -> None:
        node = self._node_of(handle)
        if node is None:
            return
        if node.state != "up" or node.containers is None:
            # unreachable: given up here, removed when the node is back (``_settle``)
            node.lost.add(handle.key)
            node.keys.pop(handle.key, None)
            self._where.pop(handle.key, None)
            return
        await node.containers.remove(handle)
        node.keys.pop(handle.key, None)
        node.lost.discard(handle.key)
        self._where.pop(handle.key, None)

    def _live(self, handle: ContainerHandle) -> DockerContainers:
        node = self._node_of(handle)
        if node is None or node.state != "up" or node.containers is None:
            entry = node.entry if node is not None else handle.state.get("node", "?")
            raise EngineUnavailable(f"compute node lost ({entry})")
        return node.containers

    async def list_owned(self, instance: str | None = None) -> list[ContainerHandle]:
        found: list[ContainerHandle] = []
        for node in list(self._nodes.values()):
            if node.state != "up" or node.containers is None:
                continue
            try:
                handles = await node.containers.list_owned(instance)
            except O16nError as exc:  # that node is going: the others are still listed
                log.warning(
                    "a compute node did not list its containers",
                    extra={"node": node.entry, "error": exc.message},
                )
                continue
            for handle in handles:
                if handle.key:
                    node.keys.setdefault(handle.key, handle.kind)
                    self._where[handle.key] = node.name
            found.extend(handles)
        return found

    async def exits(self) -> AsyncGenerator[tuple[str, bool], None]:
        while True:
            yield await self._exits.get()

    async def _follow(self, node: Node) -> None:
        """Hand the node's container ends to ``exits`` while it is connected."""
        assert node.containers is not None
        async with contextlib.aclosing(node.containers.exits()) as ends:
            async for key, after_outage in ends:
                self._exits.put_nowait((key, after_outage))

    async def sweep(self, in_use: Callable[[str], bool]) -> int:
        removed = 0
        for node in list(self._nodes.values()):
            if node.state == "up" and node.containers is not None:
                removed += await node.containers.sweep(in_use)
        return removed

    async def begin(self) -> None:
        """At start: end an earlier run's SSH masters, clear its spool, and learn which
        engine the local one is (a node that is the same engine is refused)."""
        await self.end_stale_masters()
        await self.clear_spool()
        local = self._nodes[LOCAL]
        assert local.gateway is not None
        local.engine = _identity((await local.gateway.engine_details())[0])

    async def clear_spool(self) -> None:
        """Remove image archives a controller that died while moving one left behind."""
        await asyncio.to_thread(shutil.rmtree, self._spool, True)

    async def end_stale_masters(self) -> None:
        """End the SSH masters a controller of this data directory left when it died (each
        keeps its node's forwards and connection otherwise, for as long as it lives)."""
        for control in await asyncio.to_thread(sorted, self._control_dir.glob("*.ctl")):
            log.info("ending an ssh master left by an earlier run", extra={"control": str(control)})
            ending = await asyncio.create_subprocess_exec(
                "ssh", "-F", "/dev/null", "-S", str(control), "-O", "exit", "o16n",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await ending.wait()
            if ending.returncode is None:
                ending.kill()
                await ending.wait()
            await asyncio.to_thread(control.unlink, True)

    async def close(self) -> None:
        """Stop the keepers and let go of the remote nodes (containers keep running); the
        control directory goes if nothing is left in it (a master that would not end is)."""
        for node in list(self._nodes.values()):
            await self._stop(node)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._control_dir.rmdir)

    async def _stop(self, node: Node) -> None:
        for task in (node.keeper, node.follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        node.keeper = node.follower = None
        if node.name != LOCAL:
            await self._disconnect(node)

    # --- images ---------------------------------------------------------------------------

    async def _ensure_image(self, node: Node, image: str) -> None:
        """Copy ``image`` to ``node`` from a node that has it, once at a time per pair."""
        assert node.gateway is not None
        if await node.gateway.image_exists(image):
            return
        key = (node.name, image)
        running = self._moves.get(key)
        if running is None:
            running = asyncio.ensure_future(self._move(node, image))
            self._moves[key] = running
            running.add_done_callback(lambda _: self._moves.pop(key, None))
        await asyncio.shield(running)

    async def _move(self, target: Node, image: str) -> None:
        """Copy ``image`` to ``target``: made again there from the runtime image when it has
        no layer of its own (a pristine snapshot: nothing moves), else by save/load."""
        into = target.gateway  # this connection's, whatever happens to the node meanwhile
        assert into is not None
        for source in list(self._nodes.values()):
            origin = source.gateway
            if source is target or source.state != "up" or origin is None:
                continue
            if not await origin.image_exists(image):
                continue
            layers = await origin.image_layers(image)
            labels = await origin.image_labels(image)
            ours = {k: v for k, v in labels.items() if k.startswith(LABEL_PREFIX)}
            repository, _, tag = image.rpartition(":")
            if layers == await layers_or_none(into, self._base) and dockerfile_safe(
                image, *ours, *ours.values()
            ):
                await into.derive_image(self._base, repository, tag, ours)
                moved = 0
            else:
                moved = await copy_image(origin, into, image, self._spool, self._base)
            target.copied += 1
            target.copied_bytes += moved
            return
        if any(node.state != "up" for node in self._nodes.values()):
            raise EngineUnavailable(f"no compute node that is up has {image}; one is away")
        raise RuntimeFailure(f"image {image} is missing (no compute node that is up has it)")

    async def holder(self, image: str) -> DockerEnvironments:
        """The environments of a node that is up and has ``image`` (the local one first)."""
        for node in list(self._nodes.values()):
            gateway, environments = node.gateway, node.environments
            if node.state != "up" or gateway is None or environments is None:
                continue
            if await gateway.image_exists(image):
                return environments
        if any(node.state != "up" for node in self._nodes.values()):
            raise EngineUnavailable(f"no compute node that is up has {image}; one is away")
        raise NotFoundError(f"no compute node that is up has the environment {image}")

    def up(self) -> list[DockerEnvironments]:
        """The environments of the nodes that are up now."""
        return [n.environments for n in self._nodes.values() if n.state == "up" and n.environments]

    def environments_of(self, handle: ContainerHandle) -> DockerEnvironments:
        """The environments of the node a container runs on."""
        node = self._node_of(handle)
        if node is None or node.state != "up" or node.environments is None:
            raise EngineUnavailable(f"compute node lost ({self.node_of(handle)})")
        return node.environments

    # --- NodeControl ----------------------------------------------------------------------

    def entries(self) -> list[str]:
        return [n.entry for n in self._nodes.values() if n.address is not None]

    async def apply(self, entries: list[NodeAddress]) -> None:
        async with self._apply_lock:
            wanted = {a.name: a for a in entries}
            for name in [n for n in self._nodes if n != LOCAL and n not in wanted]:
                await self._retire(self._nodes[name])
            added = []
            for name, address in wanted.items():
                if name not in self._nodes:
                    node = Node(name, address)
                    self._nodes[name] = node
                    node.keeper = asyncio.create_task(self._keep(node), name=f"node:{name}")
                    added.append(node)
            # a node's first connection decides whether its containers are adopted: wait a
            # little for it, so a restarted controller finds its sessions there
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_CONNECT_WAIT):
                    await asyncio.gather(*(node.connected.wait() for node in added))

    async def _retire(self, node: Node) -> None:
        """A node removed from the list: its containers end here (and go, if it answers)."""
        log.info("compute node removed", extra={"node": node.entry})
        for task in (node.keeper, node.follower):  # no reconnect or loss meanwhile
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        node.keeper = node.follower = None
        containers, was_up = node.containers, node.state == "up"
        node.state = "removed"  # nothing more placed there
        self._give_up(node)
        if was_up and containers is not None:
            handles = await _quietly(containers.list_owned(), [])
            await asyncio.gather(*(_quietly(containers.remove(h), None) for h in handles))
        await self._disconnect(node)
        del self._nodes[node.name]

    async def describe(self) -> list[dict[str, Any]]:
        """Each node; the local one as its engine answers now. Only shown: the local node
        is never placed around or given up (its engine's outages are followed as before
        compute nodes, by its events), so a slow answer here changes nothing."""
        local = self._nodes[LOCAL]
        shown = self._describe(local)
        if local.gateway is not None:
            try:
                info = await asyncio.wait_for(local.gateway.info(), 2.0)
                local.version, local.error = info.version, ""
            except (O16nError, TimeoutError) as exc:
                local.error = exc.message if isinstance(exc, O16nError) else "no answer in 2 s"
                shown["state"] = "lost"
            shown.update(version=local.version or None, error=local.error or None)
        return [shown, *(self._describe(n) for n in self._nodes.values() if n is not local)]

    def _describe(self, node: Node) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for kind in node.keys.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        return {
            "name": node.name,
            "entry": node.entry,
            "state": node.state,
            "draining": node.draining,
            "version": node.version or None,
            "cpus": node.cpus,
            "containers": kinds,
            "load": round(len(node.keys) / max(node.cpus, 1), 3),
            "since": node.since,
            "imagesCopied": node.copied,
            "bytesCopied": node.copied_bytes,
            "error": node.error or None,
        }

    async def drain(self, name: str, draining: bool) -> None:
        node = self._nodes.get(name)  # by name only: what /admin/nodes answers with
        if node is None:
            raise NotFoundError(f"no compute node {name!r}")
        node.draining = draining
        log.info("compute node drain", extra={"node": node.entry, "draining": draining})

    # --- a remote node's life -------------------------------------------------------------

    async def _keep(self, node: Node) -> None:
        """Run forever: connect, settle, probe until lost, reconnect (backing off)."""
        delay = RECONNECT_FIRST
        first = True
        while True:
            try:
                await self._connect(node)
                await self._settle(node, first)
            except Exception as exc:  # a keeper that died would leave the node as it is
                node.error = exc.message if isinstance(exc, O16nError) else repr(exc)
                if not isinstance(exc, O16nError | OSError):
                    log.exception("compute node connection failed", extra={"node": node.entry})
                log.warning(
                    "compute node unreachable", extra={"node": node.entry, "error": node.error}
                )
                await self._disconnect(node)
                node.connected.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            first = False
            node.state, node.error, node.since = "up", "", time.time()
            node.connected.set()
            log.info("compute node up", extra={"node": node.entry, "version": node.version})
            node.follower = asyncio.create_task(self._follow(node), name=f"exits:{node.name}")
            reason = await self._probe(node)
            node.state, node.error, node.since = "lost", reason, time.time()  # nothing placed
            node.follower.cancel()
            with contextlib.suppress(BaseException):
                await node.follower
            node.follower = None
            log.warning("compute node lost", extra={"node": node.entry, "error": reason})
            self._give_up(node)
            await self._disconnect(node)

    async def _connect(self, node: Node) -> None:
        assert node.address is not None
        settings = self._settings
        if node.address.scheme == "ssh":
            key_file = await asyncio.to_thread(self._key_file)
            node.remote = RemoteNode(node.address, settings, key_file, self._control_dir)
            base_url = await node.remote.open()
        else:
            base_url = node.entry
        node.gateway = await DockerGateway.connect(
            settings.docker_workers,
            settings.docker_slow_workers,
            base_url=base_url,
            timeout=REMOTE_TIMEOUT,
        )
        info, details = await node.gateway.info(), await node.gateway.engine_details()
        cpus = details[0].get("NCPU")
        node.version = info.version
        node.cpus = min(max(cpus, 1), 4096) if isinstance(cpus, int) else 1
        node.engine = _identity(details[0])
        self._claim(node)
        if node.remote is not None:
            local_bundle = await asyncio.to_thread(agent_bundle.stage, settings.data_dir)
            bundle = await node.remote.ensure_bundle(local_bundle)
            files: Any = node.remote.files(bundle)
        else:
            files = LocalFiles(settings)
        node.containers = DockerContainers(node.gateway, settings, files, node=node.name)
        node.environments = DockerEnvironments(node.gateway, settings, self._base)
        if not await node.gateway.image_exists(self._base):
            local = self._nodes[LOCAL].gateway
            assert local is not None
            log.info("copying the runtime image to a compute node", extra={"node": node.entry})
            await copy_image(local, node.gateway, self._base, self._spool)

    def _claim(self, node: Node) -> None:
        """Refuse a node whose engine another node is already (the local socket added as a
        node, an engine under its name and its address): its containers would be listed,
        counted and given up twice. A node holds its engine's identity from this check,
        made as soon as the engine answers, until it is let go of; of two addresses of one
        engine connecting at once, whichever checks second is refused."""
        for other in self._nodes.values():
            if other is not node and other.engine and other.engine == node.engine:
                raise RuntimeFailure(
                    f"{node.entry} is the same Docker engine as {other.entry}: a node once only"
                )

    async def _settle(self, node: Node, first: bool) -> None:
        """Take the node's containers in hand: at this process's first connection they are
        adopted (their agents' sockets forwarded again); after a loss they are removed."""
        assert node.containers is not None
        for handle in await node.containers.list_owned():
            if not is_key(handle.key):
                continue  # labelled by hand, not ours to touch
            if first and handle.key not in node.lost:
                try:
                    await node.containers.reattach(handle)
                except O16nError as exc:
                    log.warning(
                        "a container on a node could not be reached again",
                        extra={"node": node.entry, "key": handle.key, "error": exc.message},
                    )
                    continue  # no sandbox adopts it: the periodic sweep removes it
                node.keys[handle.key] = handle.kind
                self._where[handle.key] = node.name
            else:
                log.info(
                    "removing a container from before its node was lost",
                    extra={"node": node.entry, "key": handle.key},
                )
                await node.containers.remove(handle)
        # given-up keys stay ``lost`` until their removal is asked for (``remove``): a late
        # poll of one says "lost", never what the new connection finds

    async def _probe(self, node: Node) -> str:
        """Wait until the node is lost; returns why."""
        assert node.gateway is not None
        interval = self._settings.node_probe_seconds
        closed = (
            asyncio.ensure_future(node.remote.ssh.wait_closed())
            if node.remote is not None
            else asyncio.get_running_loop().create_future()
        )
        failures = 0
        try:
            while True:
                done, _ = await asyncio.wait({closed}, timeout=interval)
                if done:
                    return "the SSH connection to the node ended"
                try:
                    async with asyncio.timeout(max(interval, PROBE_TIMEOUT)):
                        await node.gateway.ping()
                    failures = 0
                except (O16nError, TimeoutError) as exc:
                    failures += 1
                    node.error = exc.message if isinstance(exc, O16nError) else "no answer"
                    if failures >= PROBE_FAILURES:
                        return f"the engine did not answer {failures} probes: {node.error}"
        finally:
            closed.cancel()

    def _give_up(self, node: Node) -> None:
        """Report the node's containers as ended; they are removed when it is back. Not as
        noticed after an engine outage: their reason, "compute node lost", says what
        happened, and the outage note would say the engine answered again."""
        for key in list(node.keys):
            node.lost.add(key)
            self._exits.put_nowait((key, False))
        node.keys.clear()

    async def _disconnect(self, node: Node) -> None:
        """Let go of the node's connection. Its engine's identity goes too: a node refused
        as another's engine must not, once let go of, keep that one from coming back."""
        if node.address is not None:
            node.engine = ""
        node.containers = node.environments = None
        gateway, node.gateway = node.gateway, None
        remote, node.remote = node.remote, None
        if gateway is not None:
            with contextlib.suppress(Exception):
                await gateway.close()
        if remote is not None:
            with contextlib.suppress(Exception):
                await remote.close()


def control_path(data_dir: Path) -> Path:
    """The name of ``control_dir`` (nothing made)."""
    digest = hashlib.sha256(str(data_dir.absolute()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"o16n-ssh-{os.geteuid()}-{digest}"


def control_dir(data_dir: Path) -> Path:
    """Where the SSH masters' control sockets and the nodes' forwarded engine sockets live:
    a short path (Unix socket paths are short), this user's alone, and the same at every
    start of a controller of ``data_dir``, so that one that died has its masters found and
    ended (``DockerNodes.end_stale_masters``). Blocking (a mkdir and an lstat)."""
    path = control_path(data_dir)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    found = path.lstat()
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
        raise RuntimeFailure(f"{path} is not a directory of this user's alone: remove it")
    return path


def _identity(info: dict[str, Any]) -> str:
    """What tells two addresses of one engine: its ID with its host name and data root
    (engines on one machine can share an ID: it lives in /etc/docker/key.json)."""
    return "|".join(str(info.get(k) or "") for k in ("ID", "Name", "DockerRootDir"))


def _place_of(node: Node) -> str:
    """The node as ``ContainerHandle.place`` names it ("" for the local one)."""
    return "" if node.address is None else node.name


async def _quietly(call: Awaitable[T], default: T) -> T:
    try:
        return await call
    except O16nError as exc:
        log.warning("compute node call failed", extra={"error": exc.message})
        return default


class NodeEnvironments:
    """The environment store over every node: images are made on the node of the container
    they capture, kept where they are, released and swept everywhere."""

    def __init__(self, nodes: DockerNodes, local: DockerEnvironments) -> None:
        self._nodes = nodes
        self._local = local

    @property
    def base(self) -> str:
        return self._local.base

    async def capture(self, handle: ContainerHandle, kind: str, labels: dict[str, str]) -> Captured:
        return await self._nodes.environments_of(handle).capture(handle, kind, labels)

    async def keep(self, ref: str, kind: str) -> str:
        return await (await self._nodes.holder(ref)).keep(ref, kind)

    async def release(self, ref: str) -> bool:
        """Released on the nodes up now; the others' copies go with their next sweep."""
        released = True
        for environments in self._nodes.up():
            try:
                released = await environments.release(ref) and released
            except EngineUnavailable:
                released = False  # that node went meanwhile: try again later
        return released

    async def resolve(self, ref: str) -> str:
        return ref

    async def origin(self, ref: str) -> str:
        return await (await self._nodes.holder(ref)).origin(ref)

    async def sweep(self, keep: set[str], min_age: float = 0.0) -> int:
        removed = 0
        for environments in self._nodes.up():
            with contextlib.suppress(EngineUnavailable):  # that node went: its next round
                removed += await environments.sweep(keep, min_age)
        return removed

    async def count(self, kind: str) -> int:
        """The local engine's images of ``kind`` (``/admin/node``'s figure)."""
        return await self._local.count(kind)
