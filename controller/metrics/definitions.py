"""Every process-wide metric, defined once, in o16n's own registry.

Module-level objects, as Prometheus does it, but in ``REGISTRY`` (not the client's global
default), so that many apps in one process (the tests) never meet a "Duplicated timeseries".
What one app reads from its live objects at scrape time is in ``controller.metrics.live``.

Hot paths use the ``*_child`` helpers: they cache each labelled child in a dict, so a
request costs a dict lookup and an ``observe`` rather than a ``labels()`` call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from controller import __version__
from controller.errors import O16nError, ServiceUnavailableError

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: Seconds: from a millisecond (a status page) to the consume time limit's order.
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, float("inf"),
)  # fmt: skip
#: Seconds of one engine call: an inspect takes milliseconds, a build minutes.
DOCKER_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"),
)  # fmt: skip
#: Seconds of one unit of database work: usually well under a millisecond.
DB_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 5.0, float("inf"),
)  # fmt: skip

# --- HTTP -------------------------------------------------------------------------------------

HTTP_SECONDS = Histogram(
    "o16n_http_request_duration_seconds",
    "HTTP requests by route template (never a raw path; 'unmatched' for no route), "
    "method and status code.",
    ["route", "method", "code"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)


class InFlight:
    """Requests being served: a plain count the middleware bumps (no lock: one event loop
    per process), read by the gauge at scrape time."""

    count = 0


HTTP_IN_FLIGHT = Gauge(
    "o16n_http_requests_in_flight", "HTTP requests being served.", registry=REGISTRY
)
HTTP_IN_FLIGHT.set_function(lambda: InFlight.count)

Outcome = Literal["success", "failure", "rejected", "client_error", "error"]
OUTCOMES: tuple[Outcome, ...] = ("success", "failure", "rejected", "client_error", "error")

CONSUME_SECONDS = Histogram(
    "o16n_consume_duration_seconds",
    "Consume requests of published services by outcome: success, failure (the service's "
    "code failed), rejected (429/503: no capacity), client_error (other 4xx), error (5xx).",
    ["service", "version", "outcome"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
EXECUTE_SECONDS = Histogram(
    "o16n_execute_duration_seconds",
    "Session executions by outcome (as o16n_consume_duration_seconds).",
    ["outcome"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)

# --- containers, logins, engine and database calls ----------------------------------------------

CONTAINER_STARTS = Counter(
    "o16n_container_starts",
    "Containers launched, by kind (session, service, warm, probe) and outcome (ok, failed).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
CONTAINER_DEATHS = Counter(
    "o16n_container_deaths",
    "Containers of this controller that ended, by kind (a warm one taken for a session or "
    "a service counts as that) and reason: oom, killed (by a "
    "signal), exited (by itself), missing (gone from the engine), timeout (did not stop "
    "when interrupted), removed (by the controller: the normal end).",
    ["kind", "reason"],
    registry=REGISTRY,
)
LOGINS = Counter(
    "o16n_logins",
    "Sign-ins by source (local, ldap, aad) and outcome (success, failure, unavailable, throttled).",
    ["source", "outcome"],
    registry=REGISTRY,
)
DOCKER_SECONDS = Histogram(
    "o16n_docker_call_duration_seconds",
    "Docker engine API calls by operation (the Docker SDK call's name).",
    ["operation"],
    buckets=DOCKER_BUCKETS,
    registry=REGISTRY,
)
DB_SECONDS = Histogram(
    "o16n_db_call_duration_seconds",
    "Units of database work by operation (read, write, transaction), waiting for the "
    "connection included.",
    ["operation"],
    buckets=DB_BUCKETS,
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "o16n_build_info", "Always 1; the version of o16n running.", ["version"], registry=REGISTRY
)
BUILD_INFO.labels(__version__).set(1)

# --- cached children: the hot paths' one dict lookup ---------------------------------------------


class Children(dict[tuple[str | int, ...], Histogram]):
    """The labelled children of one histogram, keyed by their label values: a hit is a
    plain dict lookup; a miss makes the child (``labels()``, its lock) once."""

    def __init__(self, metric: Histogram) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: tuple[str | int, ...]) -> Histogram:
        child = self[key] = self.metric.labels(*map(str, key))
        return child


_http = Children(HTTP_SECONDS)
_consume = Children(CONSUME_SECONDS)
_execute = Children(EXECUTE_SECONDS)
_docker = Children(DOCKER_SECONDS)
_db = Children(DB_SECONDS)


def http_child(route: str, method: str, code: int) -> Histogram:
    return _http[route, method, code]


def consume_child(service: str, version: str, outcome: Outcome) -> Histogram:
    return _consume[service, version, outcome]


def forget_service(service: str, version: str) -> None:
    """Drop a deleted version's consume series: only services that exist have one."""
    for outcome in OUTCOMES:
        if _consume.pop((service, version, outcome), None) is not None:
            CONSUME_SECONDS.remove(service, version, outcome)


def execute_child(outcome: Outcome) -> Histogram:
    return _execute[(outcome,)]


def outcome_of(status: int, success: bool = True) -> Outcome:
    """The outcome label of a consume or execute that answered ``status``."""
    if status < 400:
        return "success" if success else "failure"
    if status in (429, 503):
        return "rejected"
    return "client_error" if status < 500 else "error"


def count_login(source: str, outcome: str) -> None:
    LOGINS.labels(source, outcome).inc()


@contextmanager
def login_refusals(source: str) -> Iterator[None]:
    """Count a sign-in refused inside: ``unavailable`` for a 503 (the directory, its keys
    or the store out of reach), ``failure`` for any other of our errors."""
    try:
        yield
    except ServiceUnavailableError:
        count_login(source, "unavailable")
        raise
    except O16nError:
        count_login(source, "failure")
        raise


@contextmanager
def docker_call(operation: str) -> Iterator[None]:
    """Time one Docker engine call (whatever its end)."""
    child = _docker[(operation,)]
    start = time.perf_counter()
    try:
        yield
    finally:
        child.observe(time.perf_counter() - start)


def db_child(operation: str) -> Histogram:
    return _db[(operation,)]
