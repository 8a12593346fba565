"""Benchmark: controllers on PostgreSQL behind HAProxy (issue 16's figures), in one run.

1. The store: session create and consume p50 on PostgreSQL versus SQLite, same run. Two
   controllers alone (no proxy), one on a throw-away PostgreSQL 15 database
   (tests/postgres_cluster.py), one on its own SQLite file, sampled in turn: ``--n``
   session creates each (each deleted after, and the warm pool refilled and settled
   before the next: the container is the same on both, the store is what differs), then
   ``--requests`` consumes of a trivial service one after another, in blocks of 50.
2. Throughput: ``--clients`` closed-loop clients consuming that service for
   ``--duration`` s through HAProxy (docs/haproxy.cfg as tests/haproxy.py runs it) in front
   of two controllers sharing one database, and in front of one (the other put in
   maintenance on the proxy), ``--rounds`` rounds alternating, after a warm-up of each.
3. Failover: a session with ``x = 42`` on the first controller, which is then killed with
   SIGKILL; seconds until the proxy marks it down, and until an execute through the proxy
   finds ``x == 42`` on the other (none after ``--failover-limit`` s: the session was not
   taken over).

    .venv/bin/python -m bench.webnodes [--duration 15] [--clients 16] [--n 10]

Needs Docker and the runtime image, PostgreSQL 15's server binaries (``make postgres``) and
haproxy (``make haproxy``). Every container of the run's instances is removed at the end,
the database cluster and the proxy stopped, also after an error, Ctrl-C or SIGTERM. Writes
bench/results/webnodes-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api, load
from bench._docker import instance_containers, machine_load, wait_settled
from bench._server import (
    BenchError,
    Server,
    common_options,
    percentile,
    say,
    start_o16n,
    summary,
)
from tests.haproxy import HAProxy
from tests.postgres_cluster import PostgresCluster, running_cluster

PREFIX = "o16n-bench-webnodes"
WEB = {"web1": f"{PREFIX}-1", "web2": f"{PREFIX}-2"}
STORES = {"postgres": f"{PREFIX}-pg", "sqlite": f"{PREFIX}-sqlite"}
LABELS = [f"o16n.instance={i}" for i in (*WEB.values(), *STORES.values())]
SERVICE, VERSION = "Plus", "1"
PUBLISH = {
    "code": "y = x + 1",
    "inputParameterDefinitions": [{"name": "x", "type": "integer"}],
    "outputParameterDefinitions": [{"name": "y", "type": "integer"}],
    "runtimeType": "Python",
}
BODY = b'{"x":1}'
EXPECT = b'"y":2'
LEASE_SECONDS = 3
#: Every controller's pools: small, two or four controllers share the machine.
POOLS = {"O16N_WARM_POOL_SIZE": "1", "O16N_SERVICE_WARM_POOL_SIZE": "1"}


def start(
    tmp: Path, name: str, instance: str, password: str, args: argparse.Namespace, **env: str
) -> tuple[Server, Api]:
    """A controller, answering, and an admin's ``Api`` on it."""
    server = start_o16n(
        tmp, password, args.image, instance=instance, tree=args.tree, name=name, env=env
    )
    server.wait_ready(timeout=120)
    return server, Api(server.url, timeout=30).login(password)


def publish(api: Api, others: list[Api]) -> None:
    """The trivial service, published on ``api``'s controller, until every one of
    ``others`` serves it too (a second or two in a group)."""
    api.ok("POST", f"/services/{SERVICE}/{VERSION}", PUBLISH)
    for other in [api, *others]:
        deadline = time.monotonic() + 30
        while (status := other.send("POST", f"/api/{SERVICE}/{VERSION}", BODY)[0]) != 200:
            if status != 404 or time.monotonic() > deadline:
                raise BenchError(f"{other.url}: the service answers {status}")
            time.sleep(0.2)


# --- 1. the store ---------------------------------------------------------------------------


def store_figures(
    tmp: Path, cluster: PostgresCluster, password: str, args: argparse.Namespace
) -> dict[str, Any]:
    cluster.create_database("webnodes_store")
    apis: dict[str, Api] = {}
    servers: list[Server] = []
    try:
        for store, instance in STORES.items():
            env = {**POOLS, "O16N_WARM_POOL_SIZE": "2"}
            if store == "postgres":
                env["O16N_DATABASE_URL"] = cluster.url("webnodes_store")
            server, apis[store] = start(tmp, store, instance, password, args, **env)
            servers.append(server)
            publish(apis[store], [])
        expected = {
            f"o16n.instance={i}": len(instance_containers(f"o16n.instance={i}"))
            for i in STORES.values()
        }
        creates: dict[str, list[float]] = {store: [] for store in STORES}
        for i in range(args.n):
            for store, api in apis.items():
                wait_settled(expected, settle=1.0)
                started = time.perf_counter()
                session = api.session()
                creates[store].append(time.perf_counter() - started)
                api.ok("DELETE", f"/sessions/{session}")
            say(f"session create {i + 1}/{args.n}")
        consumes: dict[str, list[float]] = {store: [] for store in STORES}
        for done in range(0, args.requests, 50):
            for store, api in apis.items():
                for _ in range(min(50, args.requests - done)):
                    started = time.perf_counter()
                    status, raw = api.send("POST", f"/api/{SERVICE}/{VERSION}", BODY)
                    consumes[store].append(time.perf_counter() - started)
                    if status != 200 or EXPECT not in raw:
                        raise BenchError(f"{store}: consume answered {status}: {raw[:200]!r}")
        return {
            store: {"session_create": summary(creates[store]), "consume": summary(consumes[store])}
            for store in STORES
        }
    finally:
        for server in servers:
            server.stop()
        cluster.drop_database("webnodes_store")


# --- 2. and 3. the group behind the proxy -----------------------------------------------------


@contextmanager
def group(
    tmp: Path, cluster: PostgresCluster, password: str, args: argparse.Namespace
) -> Iterator[tuple[dict[str, Server], HAProxy, Api]]:
    """Two controllers on one database behind HAProxy, and an admin's ``Api`` through it."""
    cluster.create_database("webnodes_group")
    shared = tmp / "shared"
    shared.mkdir()
    env = {
        **POOLS,
        "O16N_DATABASE_URL": cluster.url("webnodes_group"),
        "O16N_JWT_SECRET": secrets.token_urlsafe(32),
        "O16N_SHARED_DIR": str(shared),
        "O16N_LEASE_SECONDS": str(LEASE_SECONDS),
        "O16N_TRUSTED_PROXIES": "127.0.0.1/32",
    }
    with ExitStack() as stack:
        stack.callback(cluster.drop_database, "webnodes_group")
        servers: dict[str, Server] = {}
        for name, instance in WEB.items():  # one after the other: the first migrates
            servers[name], _ = start(tmp, name, instance, password, args, **env)
            stack.callback(servers[name].stop)
        proxy_dir = tmp / "haproxy"
        proxy_dir.mkdir()
        proxy = HAProxy(proxy_dir, {n: s.url.removeprefix("http://") for n, s in servers.items()})
        stack.callback(proxy.stop)
        proxy.start()
        for name in servers:
            proxy.wait_status(name, "UP")
        yield servers, proxy, Api(proxy.url, timeout=30).login(password)


def throughput(proxy: HAProxy, api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Consumes per second through the proxy with both controllers in rotation, and with
    web1 alone."""
    path = f"/api/{SERVICE}/{VERSION}"

    def request(client: int, i: int) -> tuple[str, bytes]:
        return path, BODY

    def check(i: int, raw: bytes) -> bool:
        return EXPECT in raw

    def rotation(mode: str) -> None:
        if mode == "one":
            proxy.command("set server o16n_controllers/web2 state maint")
            proxy.wait_status("web2", "MAINT")
        else:
            proxy.command("set server o16n_controllers/web2 state ready")
            proxy.wait_status("web2", "UP")

    apis = [api.clone() for _ in range(args.clients)]
    runs: dict[str, list[dict[str, Any]]] = {"two": [], "one": []}
    try:
        for mode in ("two", "one"):  # each pool grown to what the load needs, not recorded
            rotation(mode)
            say(f"warm-up, {mode} controller(s), {args.warmup} s ...")
            load(apis, request, check, duration=args.warmup)
        for r in range(args.rounds):
            for mode in ("two", "one") if r % 2 == 0 else ("one", "two"):
                rotation(mode)
                say(f"round {r + 1}: {mode} controller(s), c={args.clients}, {args.duration} s ...")
                runs[mode].append(load(apis, request, check, duration=args.duration))
        rotation("two")
    finally:
        for client in apis:
            client.close()
    figures: dict[str, Any] = {}
    for mode, results in runs.items():
        figures[mode] = {
            "rps": percentile([r["rps"] for r in results], 50),
            "p50_ms": percentile([r["p50_ms"] for r in results], 50),
            "p99_ms": percentile([r["p99_ms"] for r in results], 50),
            "runs": results,
        }
    figures["served"] = {name: row["stot"] for name, row in proxy.servers().items()}
    return figures


def failover(
    servers: dict[str, Server], proxy: HAProxy, api: Api, password: str, args: argparse.Namespace
) -> dict[str, Any]:
    """kill -9 of web1 while it holds a session with ``x = 42``: seconds until the proxy
    marks it down, and until the session answers with its ``x`` through the proxy."""
    web1 = Api(servers["web1"].url, timeout=30).login(password)
    session = web1.session()
    web1.execute(session, "x = 42")
    body = {"code": "pass", "outputParameters": ["x"]}
    poll = Api(proxy.url, api.token, timeout=10)
    say("kill -9 web1 ...")
    killed = time.monotonic()
    servers["web1"].process.kill()
    servers["web1"].process.wait()
    figures: dict[str, Any] = {"lease_seconds": LEASE_SECONDS, "down_s": None, "session_s": None}
    statuses: dict[str, int] = {}
    while time.monotonic() - killed < args.failover_limit:
        if figures["down_s"] is None and proxy.servers()["web1"]["status"] == "DOWN":
            figures["down_s"] = time.monotonic() - killed
        try:
            status, reply = poll.call("POST", f"/sessions/{session}/execute", body)
        except BenchError:
            status, reply = 0, None
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if (
            status == 200
            and {p["name"]: p["value"] for p in reply.get("outputParameters") or []}.get("x") == 42
        ):
            figures["session_s"] = time.monotonic() - killed
            break
        time.sleep(0.1)
    figures["answers_while_waiting"] = statuses
    return figures


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABELS[0])}
    password = "bench-" + secrets.token_urlsafe(18)
    say("PostgreSQL 15 cluster ...")
    with running_cluster() as cluster:
        say("the store: PostgreSQL and SQLite ...")
        figures["store"] = store_figures(tmp, cluster, password, args)
        say("two controllers behind HAProxy ...")
        with group(tmp, cluster, password, args) as (servers, proxy, api):
            publish(api, [Api(s.url, timeout=30).login(password) for s in servers.values()])
            figures["throughput"] = throughput(proxy, api, args)
            figures["failover"] = failover(servers, proxy, api, password, args)
    figures["machine_at_end"] = machine_load(LABELS[0])
    return figures


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    store, through, fail = figures["store"], figures["throughput"], figures["failover"]
    pg, lite = store["postgres"], store["sqlite"]
    lines = [
        f"{'p50, ms':38}{'PostgreSQL':>12}{'SQLite':>12}{'PG/SQLite':>11}",
    ]
    for key, label in (("session_create", "session create"), ("consume", "consume (c=1)")):
        a, b = pg[key]["p50_ms"], lite[key]["p50_ms"]
        lines.append(f"  {label:36}{a:12.2f}{b:12.2f}{a / b:11.2f}")
    two, one = through["two"], through["one"]
    lines += [
        "",
        f"{'through HAProxy, c=' + str(args.clients):38}{'two':>12}{'one':>12}{'two/one':>11}",
        *(
            f"  {label:36}{two[key]:12.1f}{one[key]:12.1f}{two[key] / one[key]:11.2f}"
            for key, label in (("rps", "consumes/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"))
        ),
        "",
        f"failover (kill -9, lease {fail['lease_seconds']} s): proxy marks it down in "
        + (f"{fail['down_s']:.2f} s" if fail["down_s"] is not None else "-")
        + ", the session answers with x = 42 in "
        + (
            f"{fail['session_s']:.2f} s"
            if fail["session_s"] is not None
            else f"- (not within {args.failover_limit} s: {fail['answers_while_waiting']})"
        ),
    ]
    if fail["session_s"] is not None:
        within = fail["session_s"] <= fail["lease_seconds"] + 5
        lines.append(f"{'PASS' if within else 'MISS'}  failover within lease + 5 s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per load run (15)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of warm-up per mode (5)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of two and one (1)")
    parser.add_argument("--n", type=int, default=10, help="session creates per store (10)")
    parser.add_argument("--requests", type=int, default=200, help="consumes per store (200)")
    parser.add_argument(
        "--failover-limit", type=float, default=60.0, help="seconds to wait for the session (60)"
    )
    common_options(parser)
    args = parser.parse_args(argv)
    if min(args.duration, args.clients, args.rounds, args.n, args.requests) < 1:
        parser.error("--duration, --clients, --rounds, --n, --requests must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_bench("webnodes", args, run, summarise, labels=LABELS, tools=["docker", "haproxy"])


if __name__ == "__main__":
    raise SystemExit(main())
