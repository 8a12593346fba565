"""What ``/metrics`` reads from one app's live objects when it is scraped: service pools,
warm pools, sessions, batch records.

Each app has its own registry (``LIVE``), registered by ``routes.metrics_ctx`` while the app runs
and emptied at its clean-up, so series of a deleted service or of a stopped app are gone
and two apps in one process never collide. The pools are read, not told: nothing on the
consume path updates a gauge. The batch counts come from the database, read (async) by
``refresh`` before the text is made, never by ``collect`` (which runs on the event loop).
"""

from __future__ import annotations

from collections.abc import Iterable

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


class LiveCollector(Collector):
    """The gauges of one app, read at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self.batches: dict[str, int] = {}

    async def refresh(self) -> None:
        """Read what needs the database (before ``collect``, which may not wait)."""
        self.batches = await BatchesRepo(self._app[DB]).count_by_state()

    def collect(self) -> Iterable[Metric]:
        yield from self._service_pools()
        yield from self._warm_pools()
        yield self._sessions()
        batches = GaugeMetricFamily(
            "o16n_batch_records", "Batch executions (not deleted) by state.", labels=["state"]
        )
        for state in (*BATCH_STATES, *sorted(set(self.batches) - set(BATCH_STATES))):
            batches.add_metric([state], self.batches.get(state, 0))
        yield batches

    def _service_pools(self) -> Iterable[Metric]:
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
        registry = self._app.get(SERVICES)
        for service in registry.all() if registry is not None else ():
            if reserved(service.record.name):  # a diagnostics run's temporary, hidden
                continue
            pool, labels = service.pool, [service.record.name, service.record.version]
            containers.add_metric([*labels, "idle"], pool.ready)
            containers.add_metric([*labels, "busy"], pool.busy)
            containers.add_metric([*labels, "starting"], pool.starting)
            queue.add_metric(labels, pool.queued)
            rejected.add_metric(labels, pool.rejected)
            served.add_metric(labels, pool.served)
            sizes.add_metric([*labels, "initial"], pool.initial)
            sizes.add_metric([*labels, "max"], pool.maximum)
        yield from (containers, queue, rejected, served, sizes)

    def _warm_pools(self) -> Iterable[Metric]:
        level = GaugeMetricFamily(
            "o16n_warm_pool_containers",
            "Pre-started containers ready in each warm pool (sessions, services).",
            labels=["pool"],
        )
        target = GaugeMetricFamily(
            "o16n_warm_pool_target", "The size each warm pool is kept at.", labels=["pool"]
        )
        for pool in self._app.get(WARM_POOLS, []):
            level.add_metric([pool.purpose], pool.ready)
            target.add_metric([pool.purpose], pool.size)
        yield from (level, target)

    def _sessions(self) -> Metric:
        counts = dict.fromkeys(SESSION_STATES, 0)
        manager = self._app.get(SESSIONS)
        for session in manager.everyone() if manager is not None else ():
            if not session.alive:
                counts["dead"] += 1
            elif session.reconnecting is not None:
                counts["reconnecting"] += 1
            else:
                counts["executing" if session.executing else "idle"] += 1
        family = GaugeMetricFamily(
            "o16n_sessions",
            "Sessions this controller knows, by state (dead: ended, kept a while to say why).",
            labels=["state"],
        )
        for state, count in counts.items():
            family.add_metric([state], count)
        return family


class LiveMetrics:
    """One app's scrape-time registry."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = LiveCollector(app)
        self.registry.register(self.collector)

    async def text(self) -> bytes:
        await self.collector.refresh()
        return generate_latest(self.registry)

    def close(self) -> None:
        self.registry.unregister(self.collector)


#: The app's scrape-time metrics (only while ``O16N_METRICS`` is on).
LIVE = web.AppKey("live_metrics", LiveMetrics)
