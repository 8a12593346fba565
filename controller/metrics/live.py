"""What ``/metrics`` reads from one app's live objects when it is scraped: service pools,
warm pools, sessions, batch records.

Each app has its own registry (``LIVE``), registered by ``routes.metrics_ctx`` while the app runs
and emptied at its clean-up, so series of a deleted service or of a stopped app are gone
and two apps in one process never collide. The pools are read, not told: nothing on the
consume path updates a gauge.

A scrape copies the numbers on the event loop (``refresh``: the batch counts from the
database, then a ``Snapshot`` of the pools and sessions, which only the loop changes), and
``collect`` and the text are made from that copy on a worker thread: the loop is not held
while the series of many services are formatted, and no thread reads a pool while the loop
changes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from controller.reserved_names import reserved
from controller.runtime.warm_pool import WARM_POOLS
from controller.services.registry import SERVICES
from controller.sessions.manager import SESSIONS
from controller.store.batches import BatchesRepo
from controller.store.db import DB

#: The states ``o16n_batch_records`` always has (zero when no batch is in them).
BATCH_STATES = ("Pending", "InProgress", "Complete", "Failed", "Canceled")
#: The states of ``o16n_sessions``.
SESSION_STATES = ("idle", "executing", "reconnecting", "dead")


class PoolNumbers(NamedTuple):
    """One published version's pool at the scrape."""

    service: str
    version: str
    idle: int
    busy: int
    starting: int
    queued: int
    rejected: int
    served: int
    initial: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The numbers of one scrape, copied on the event loop: plain values a worker thread
    may read."""

    pools: tuple[PoolNumbers, ...] = ()
    warm: tuple[tuple[str, int, int], ...] = ()  # (pool, ready, target)
    sessions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SESSION_STATES, 0))
    batches: dict[str, int] = field(default_factory=dict)


class LiveCollector(Collector):
    """The gauges of one app: ``refresh`` on the loop, ``collect`` anywhere."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.snapshot = Snapshot()

    async def refresh(self) -> None:
        """Read the database, then copy the live objects (no await between the reads, so
        the copy is of one moment)."""
        batches = await BatchesRepo(self._app[DB]).count_by_state()
        self.snapshot = Snapshot(self._pools(), self._warm(), self._sessions(), batches)

    def _pools(self) -> tuple[PoolNumbers, ...]:
        registry = self._app.get(SERVICES)
        pools = []
        for service in registry.all() if registry is not None else ():
            if reserved(service.record.name):  # a diagnostics run's temporary, hidden
                continue
            pool, record = service.pool, service.record
            pools.append(
                PoolNumbers(
                    record.name,
                    record.version,
                    pool.ready,
                    pool.busy,
                    pool.starting,
                    pool.queued,
                    pool.rejected,
                    pool.served,
                    pool.initial,
                    pool.maximum,
                )
            )
        return tuple(pools)

    def _warm(self) -> tuple[tuple[str, int, int], ...]:
        return tuple(
            (pool.purpose, pool.ready, pool.target) for pool in self._app.get(WARM_POOLS, [])
        )

    def _sessions(self) -> dict[str, int]:
        counts = dict.fromkeys(SESSION_STATES, 0)
        manager = self._app.get(SESSIONS)
        for session in manager.everyone() if manager is not None else ():
            if not session.alive:
                counts["dead"] += 1
            elif session.reconnecting is not None:
                counts["reconnecting"] += 1
            else:
                counts["executing" if session.executing else "idle"] += 1
        return counts

    def collect(self) -> Iterable[Metric]:
        snapshot = self.snapshot  # one snapshot, whatever a concurrent scrape refreshes
        yield from _service_pools(snapshot.pools)
        yield from _warm_pools(snapshot.warm)
        sessions = GaugeMetricFamily(
            "o16n_sessions",
            "Sessions this controller knows, by state (dead: ended, kept a while to say why).",
            labels=["state"],
        )
        for state, count in snapshot.sessions.items():
            sessions.add_metric([state], count)
        yield sessions
        batches = GaugeMetricFamily(
            "o16n_batch_records", "Batch executions (not deleted) by state.", labels=["state"]
        )
        known = snapshot.batches
        for state in (*BATCH_STATES, *sorted(set(known) - set(BATCH_STATES))):
            batches.add_metric([state], known.get(state, 0))
        yield batches


def _service_pools(pools: Iterable[PoolNumbers]) -> Iterable[Metric]:
    containers = GaugeMetricFamily(
        "o16n_service_pool_containers",
        "Containers of each published service version's pool, by state (idle, busy, starting).",
        labels=["service", "version", "state"],
    )
    queue = GaugeMetricFamily(
        "o16n_service_pool_queue_depth",
        "Consume requests waiting for a free container of the version.",
        labels=["service", "version"],
    )
    rejected = CounterMetricFamily(
        "o16n_service_pool_rejected",
        "Consume requests the version's pool turned away (503: queue full, waited too "
        "long, no container), since it was published or the controller started.",
        labels=["service", "version"],
    )
    served = CounterMetricFamily(
        "o16n_service_pool_served",
        "Consume requests the version's pool served, likewise.",
        labels=["service", "version"],
    )
    sizes = GaugeMetricFamily(
        "o16n_service_pool_size",
        "The version's pool sizes: bound=initial (kept warm) and bound=max (at most).",
        labels=["service", "version", "bound"],
    )
    for pool in pools:
        labels = [pool.service, pool.version]
        containers.add_metric([*labels, "idle"], pool.idle)
        containers.add_metric([*labels, "busy"], pool.busy)
        containers.add_metric([*labels, "starting"], pool.starting)
        queue.add_metric(labels, pool.queued)
        rejected.add_metric(labels, pool.rejected)
        served.add_metric(labels, pool.served)
        sizes.add_metric([*labels, "initial"], pool.initial)
        sizes.add_metric([*labels, "max"], pool.maximum)
    return (containers, queue, rejected, served, sizes)


def _warm_pools(warm: Iterable[tuple[str, int, int]]) -> Iterable[Metric]:
    level = GaugeMetricFamily(
        "o16n_warm_pool_containers",
        "Pre-started containers ready in each warm pool (sessions, services).",
        labels=["pool"],
    )
    target = GaugeMetricFamily(
        "o16n_warm_pool_target",
        "How many containers each warm pool keeps ready (its size on each compute node).",
        labels=["pool"],
    )
    for purpose, ready, size in warm:
        level.add_metric([purpose], ready)
        target.add_metric([purpose], size)
    return (level, target)


class LiveMetrics:
    """One app's scrape-time registry."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = LiveCollector(app)
        self.registry.register(self.collector)

    async def text(self) -> bytes:
        """The app's series: copied on the loop, formatted on a worker thread."""
        await self.collector.refresh()
        return await asyncio.to_thread(generate_latest, self.registry)

    def close(self) -> None:
        self.registry.unregister(self.collector)


#: The app's scrape-time metrics (only while ``O16N_METRICS`` is on).
LIVE = web.AppKey("live_metrics", LiveMetrics)
