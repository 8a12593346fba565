"""The compute node list: stored in the database, applied to the engine, audited.

A change is stored first, then applied (``NodeControl.apply`` with every stored entry); if
the engine refuses it, the stored list is put back and the engine is handed the old list
again, so the database and the engine agree. One lock serialises changes: two operators'
``PUT`` and ``DELETE`` never interleave between storing and applying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from controller.audit.log import AUDIT, AuditLog
from controller.errors import BadRequestError, O16nError
from controller.runtime.engines import ENGINE, Engine
from controller.runtime.nodes import NodeAddress, NodeAddressError, parse_node
from controller.settings import SETTINGS, Settings, SettingsError
from controller.store.db import DB
from controller.store.nodes import NodesRepo, StoredNode
from controller.tasks import TASKS

log = logging.getLogger(__name__)

#: The actor of the changes ``O16N_COMPUTE_NODES`` makes at start, in the audit trail.
SETTINGS_ACTOR = "settings"


@dataclass(frozen=True, slots=True)
class Change:
    """A change of the list: the entries before and after it (what the audit shows)."""

    before: list[str]
    after: list[str]


def parse_entries(entries: list[str]) -> list[NodeAddress]:
    """Each entry parsed, duplicates (the same once normalised) collapsed, in order; 400
    naming the first bad entry and its index."""
    nodes: dict[str, NodeAddress] = {}
    for index, entry in enumerate(entries):
        try:
            node = parse_node(entry)
        except NodeAddressError as exc:
            raise BadRequestError(f"entries[{index}]: {exc}") from None
        nodes.setdefault(node.entry, node)
    return list(nodes.values())


def public_key(settings: Settings) -> str | None:
    """The controller's SSH public key (``<key>.pub``) when an ``ssh://`` node may use it:
    the one ``O16N_SSH_KEY`` names, or the one the engine generated under the data
    directory; ``None`` when there is none yet."""
    key = settings.ssh_key or settings.data_dir / "ssh" / "id_ed25519"
    try:
        text = Path(f"{key}.pub").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def _stored(entry: str) -> NodeAddress:
    """A stored entry parsed at start; one an earlier version accepted and this one does
    not stops the start, named, with the way out."""
    try:
        return parse_node(entry)
    except NodeAddressError as exc:
        raise SettingsError(
            f"stored compute node {entry!r} is refused: {exc}; set O16N_COMPUTE_NODES to "
            "the list to use (it replaces the stored one)"
        ) from None


class ComputeNodes:
    """The stored list and the engine's nodes, changed together, one change at a time."""

    def __init__(
        self, repo: NodesRepo, engine: Engine, settings: Settings, audit: AuditLog
    ) -> None:
        self._repo = repo
        self._engine = engine
        self._settings = settings
        self._audit = audit
        self._lock = asyncio.Lock()
        #: the store's count of node-list changes when ``start`` read the list
        self._seen: int | None = None
        #: the list the engine was last handed (the watch hands it only a different one)
        self._applied: list[str] | None = None

    async def entries(self) -> list[str]:
        return await self._repo.entries()

    def check(self, nodes: list[NodeAddress]) -> None:
        """400 for a list this controller cannot use: any node on an engine without
        compute nodes, an ``ssh://`` node without pinned host keys."""
        if nodes and self._engine.nodes is None:
            raise BadRequestError(
                f"the {self._engine.name} engine runs containers on this machine only: "
                "it has no compute nodes (only an empty list is accepted)"
            )
        if self._settings.ssh_known_hosts is None and any(n.scheme == "ssh" for n in nodes):
            raise BadRequestError(
                "ssh:// compute nodes need pinned host keys: set O16N_SSH_KNOWN_HOSTS "
                "and restart the controller"
            )

    async def replace(self, nodes: list[NodeAddress], actor: str) -> Change:
        """Make ``nodes`` the list (POST)."""
        self.check(nodes)
        entries = [n.entry for n in nodes]
        async with self._lock:
            return await self._apply(await self._repo.replace(entries, actor))

    async def add(self, nodes: list[NodeAddress], actor: str) -> Change:
        """Add ``nodes`` after those in the list (PUT); those already there stay where they are."""
        self.check(nodes)
        async with self._lock:
            return await self._apply(await self._repo.add([n.entry for n in nodes], actor))

    async def remove(self, nodes: list[NodeAddress]) -> Change:
        """Remove ``nodes`` (DELETE); 400 naming any not in the list, and nothing changes."""
        async with self._lock:
            present = set(await self._repo.entries())
            missing = [n.entry for n in nodes if n.entry not in present]
            if missing:
                raise BadRequestError(
                    f"not in the compute node list: {', '.join(repr(e) for e in missing[:10])}"
                )
            return await self._apply(await self._repo.remove([n.entry for n in nodes]))

    async def _apply(self, before: list[StoredNode]) -> Change:
        """Hand the stored list to the engine; if it fails, put ``before`` back in both."""
        after = await self._repo.entries()
        old = [n.entry for n in before]
        control = self._engine.nodes
        if control is None:  # only an empty list passes ``check``
            return Change(old, after)
        try:
            await control.apply([parse_node(e) for e in after])
            self._applied = after
        except BaseException:
            await asyncio.shield(self._undo(before))
            raise
        return Change(old, after)

    async def _undo(self, before: list[StoredNode]) -> None:
        await self._repo.restore(before)
        control = self._engine.nodes
        if control is None:
            return
        try:
            await control.apply([parse_node(n.entry) for n in before])
            self._applied = [n.entry for n in before]
        except O16nError as exc:
            log.warning(
                "the engine did not take the compute node list back",
                extra={"error": exc.message, "entries": [n.entry for n in before]},
            )

    async def start(self) -> None:
        """At start: ``O16N_COMPUTE_NODES``, if set, replaces the stored list (audited as
        by ``settings``); then the stored list goes to the engine. An engine without
        compute nodes refuses to start with entries to apply."""
        configured = self._settings.compute_node_list
        if self._settings.compute_nodes.strip():
            self.check_at_start(configured)
            entries = [n.entry for n in configured]
            before = [n.entry for n in await self._repo.replace(entries, SETTINGS_ACTOR)]
            if before != entries:
                self._audit.record(
                    "computenodes.set",
                    "computenodes",
                    actor=SETTINGS_ACTOR,
                    detail={"before": before, "after": entries},
                )
        self._seen = await self._repo.changes()  # before the list is read: no change missed
        stored = [_stored(e) for e in await self._repo.entries()]
        self.check_at_start(stored)
        if self._engine.nodes is not None:
            await self._engine.nodes.apply(stored)
            self._applied = [n.entry for n in stored]
        if stored:
            log.info("compute nodes applied", extra={"entries": [n.entry for n in stored]})

    async def watch(self, interval: float = 1.0) -> None:
        """Run forever: hand the engine the stored list when another controller of the
        group (docs/web-nodes.md) changed it, so that every controller places containers
        on the same nodes. A list this controller cannot use (an engine without compute
        nodes, ``ssh://`` nodes without pinned host keys here) is logged and left: the
        group's members need the same node settings."""
        seen = self._seen if self._seen is not None else await self._repo.changes()
        while True:
            await asyncio.sleep(interval)
            try:
                now = await self._repo.changes()
                if now != seen:
                    seen = now
                    await self._follow()
            except O16nError as exc:
                log.warning(
                    "the changed compute node list was not applied", extra={"error": exc.message}
                )
            except Exception:  # the database, say: try again at the next change
                log.exception("the changed compute node list was not applied")

    async def _follow(self) -> None:
        async with self._lock:
            stored = [_stored(e) for e in await self._repo.entries()]
            entries = [n.entry for n in stored]
            if self._engine.nodes is None or entries == self._applied:
                return  # nothing to do (this controller's own change, say)
            self.check(stored)
            await self._engine.nodes.apply(stored)
            self._applied = entries
        log.info("compute nodes applied", extra={"entries": [n.entry for n in stored]})

    def check_at_start(self, nodes: list[NodeAddress]) -> None:
        """``check``, as a configuration error that stops the start."""
        try:
            self.check(nodes)
        except BadRequestError as exc:
            listed = ", ".join(n.entry for n in nodes)
            raise SettingsError(f"compute nodes ({listed}): {exc.message}") from None


async def compute_nodes_ctx(app: web.Application) -> AsyncIterator[None]:
    """The stored list (``O16N_COMPUTE_NODES`` first, if set) applied to the engine; entered
    after the engine and the audit trail, before the runtime adopts containers."""
    nodes = ComputeNodes(NodesRepo(app[DB]), app[ENGINE], app[SETTINGS], app[AUDIT])
    await nodes.start()
    app[COMPUTE_NODES] = nodes
    app[TASKS].spawn("compute-node-watch", nodes.watch())
    yield


#: The app's compute node list.
COMPUTE_NODES = web.AppKey("compute_nodes", ComputeNodes)
