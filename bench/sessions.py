"""Benchmark of sessions: ``POST /sessions`` against ``docker run``, and the ``execute``
round trip against an aiohttp app that execs the code, same run.

Starts two servers, "warm" (instance ``o16n-bench-sessions``, ``O16N_WARM_POOL_SIZE`` of
``--pool-size``) and "cold" (``o16n-bench-sessions-cold``, no pool), and the baseline app:

1. ``POST /sessions``, ``--n`` samples each from the full warm pool, with the pool empty,
   and of ``docker run --rm --entrypoint true IMAGE``, in rotating order, each taken while
   nothing else starts or stops; each session is deleted after its sample (timed too).
2. ``POST /sessions/{id}/execute`` with ``1+1``: ``--requests`` in a row on one session,
   then ``--duration`` s with ``--concurrency`` clients on one session and on as many
   sessions; the same load against the baseline; CPU per request of each side.

    .venv/bin/python -m bench.sessions [--n 20] [--requests 2000] [--duration 5] [--tree DIR]

Idle sessions' memory is bench/idle.py. Every container labelled with either instance is
removed at the end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from pathlib import Path
from typing import Any

from bench._bench import run_bench
from bench._client import Api, load
from bench._docker import (
    containers_cpu,
    docker_run_sample,
    instance_containers,
    machine_line,
    machine_load,
    wait_settled,
)
from bench._server import (
    Server,
    common_options,
    cpu_seconds,
    runtime_tag,
    say,
    start_app,
    start_o16n,
    summary,
    table,
)

WARM, COLD = "o16n-bench-sessions", "o16n-bench-sessions-cold"
LABEL, COLD_LABEL = f"o16n.instance={WARM}", f"o16n.instance={COLD}"
BODY = b'{"code":"1+1"}'
CPU = ("server", "client", "containers")  # CPU per request of: its server process, this
# process (the load generator), the instance's containers (0 for the baseline)

#: The baseline: compiles and execs the posted code in a persistent namespace, answering
#: with the fields of o16n's execute reply.
BASELINE_APP = """
import sys
from aiohttp import web
NAMESPACE = {}

async def execute(request):
    exec(compile((await request.json())["code"], "<execution>", "exec"), NAMESPACE)
    return web.json_response({"success": True, "errorMessage": "", "consoleOutput": "",
                              "changedFiles": [], "outputParameters": []})

app = web.Application()
app.router.add_post("/sessions/{id}/execute", execute)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""


def drive(apis: list[Api], paths: list[str], requests: int = 0, duration: float = 0) -> Any:
    """Client i posts ``1+1`` to ``paths[i % len(paths)]``, every answer checked."""
    run = load(
        apis,
        lambda client, _: (paths[client % len(paths)], BODY),
        lambda _, raw: json.loads(raw).get("success") is True,
        requests=requests,
        duration=duration,
    )
    return {**run, "sessions": min(len(paths), len(apis))}


def creation(args: argparse.Namespace, warm: Api, cold: Api, image: str) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"warm": [], "empty": [], "docker": [], "delete": []}

    def take(kind: str) -> None:
        wait_settled({LABEL: args.pool_size, COLD_LABEL: 0}, args.settle)
        if kind == "docker":
            samples["docker"].append(docker_run_sample(image, LABEL))
            return
        api = warm if kind == "warm" else cold
        started = time.perf_counter()
        session = api.session()
        samples[kind].append(time.perf_counter() - started)
        started = time.perf_counter()
        api.ok("DELETE", f"/sessions/{session}")
        samples["delete"].append(time.perf_counter() - started)

    kinds = ["warm", "empty", "docker"]
    for kind in kinds:  # warm-up: connections, caches
        take(kind)
    for kind in samples:
        samples[kind].clear()
    for i in range(args.n):
        for kind in kinds[i % 3 :] + kinds[: i % 3]:  # rotate, so that drift hits all alike
            take(kind)
        if (i + 1) % 5 == 0 or i + 1 == args.n:
            say(
                f"POST /sessions {i + 1}/{args.n}: "
                + ", ".join(f"{k} {samples[k][-1] * 1000:.0f} ms" for k in kinds)
            )
    return {kind: summary(values) for kind, values in samples.items()}


def execute(args: argparse.Namespace, warm: Api, pid: int, baseline: Server) -> dict[str, Any]:
    c = args.concurrency
    sessions = [warm.session() for _ in range(c)]
    for session in sessions:
        warm.execute(session, "1+1")
    wait_settled({LABEL: args.pool_size + c}, args.settle)
    mine = [f"/sessions/{s}/execute" for s in sessions]
    ours, theirs = (
        [warm.clone() for _ in range(c)],
        [Api(baseline.url, warm.token) for _ in range(c)],
    )
    say(f"execute: warm-up, {args.warmup_requests} requests each")
    drive(ours, mine, requests=args.warmup_requests)
    drive(theirs, ["/sessions/0/execute"], requests=args.warmup_requests)
    runs = [
        ("o16n", "c1", ours[:1], mine[:1], args.requests, 0.0),
        ("baseline", "c1", theirs[:1], ["/sessions/0/execute"], args.requests, 0.0),
        ("o16n", "cN_one_session", ours, mine[:1], 0, args.duration),
        ("baseline", "cN", theirs, ["/sessions/0/execute"], 0, args.duration),
        ("o16n", "cN_sessions", ours, mine, 0, args.duration),
    ]
    figures: dict[str, Any] = {"o16n": {}, "baseline": {}}
    containers = instance_containers(LABEL)
    for target, key, apis, paths, requests, seconds in runs:
        say(f"execute: {target} {key}, {len(apis)} client(s)")
        server, ids = (pid, containers) if target == "o16n" else (baseline.pid, [])
        before = [cpu_seconds(server), time.process_time(), containers_cpu(ids) or 0.0]
        run = drive(apis, paths, requests, seconds)
        after = [cpu_seconds(server), time.process_time(), containers_cpu(ids) or 0.0]
        spent = {
            k: (a - b) * 1000 / run["requests"] for k, a, b in zip(CPU, after, before, strict=True)
        }
        run["cpu_ms_per_request"] = spent
        figures[target][key] = run
    for session in sessions:
        warm.ok("DELETE", f"/sessions/{session}")
    return figures


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    image = args.image or runtime_tag(args.tree)
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL), "image": image}
    password = "bench-" + secrets.token_urlsafe(18)
    env = {"O16N_SESSIONS_PER_USER": "1000", "O16N_SERVICE_WARM_POOL_SIZE": "0"}

    def o16n(instance: str, name: str, pool: int) -> Server:
        pooled = {**env, "O16N_WARM_POOL_SIZE": str(pool)}
        return start_o16n(
            tmp, password, image, instance=instance, tree=args.tree, name=name, env=pooled
        )

    servers = [o16n(WARM, "warm", args.pool_size), o16n(COLD, "cold", 0)]
    servers.append(start_app(tmp, "baseline", BASELINE_APP))
    try:
        for server in servers:
            server.wait_ready()
        warm, cold = (Api(s.url).login(password) for s in servers[:2])
        figures["create"] = creation(args, warm, cold, image)
        figures["execute"] = execute(args, warm, servers[0].pid, servers[2])
        for server in servers:
            server.check_alive()
        figures["machine_at_end"] = machine_load(LABEL)
        return figures
    finally:
        for server in servers:
            server.stop()


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """Ratios and targets into ``figures``; the report."""
    create, c = figures["create"], args.concurrency
    mine, base = figures["execute"]["o16n"], figures["execute"]["baseline"]
    docker = create["docker"]
    creates = {
        f"create_{kind}_{p}_vs_docker_run": (
            f"{label}, {p} (ms)",
            create[kind][f"{p}_ms"],
            docker[f"{p}_ms"],
        )
        for kind, label in (
            ("warm", f"from the warm pool ({args.pool_size})"),
            ("empty", "with the pool empty"),
        )
        for p in ("p50", "p90")
    }
    spec = [  # figure, label, o16n's run, baseline's run, statistic
        ("p50_c1", "p50 latency, c=1 (ms)", "c1", "c1", "p50_ms"),
        ("p90_c1", "p90 latency, c=1 (ms)", "c1", "c1", "p90_ms"),
        ("rps_c1", "requests/s, c=1", "c1", "c1", "rps"),
        ("rps_cN_one_session", f"requests/s, c={c}, one session", "cN_one_session", "cN", "rps"),
        ("rps_cN_sessions", f"requests/s, c={c}, {c} sessions", "cN_sessions", "cN", "rps"),
        (
            "p50_cN_sessions",
            f"p50 latency, c={c}, {c} sessions (ms)",
            "cN_sessions",
            "cN",
            "p50_ms",
        ),
    ]
    executes = {f"execute_{k}": (label, mine[m][f], base[b][f]) for k, label, m, b, f in spec}
    figures["ratios"] = {k: a / b for k, (_, a, b) in (creates | executes).items()}
    warm_ms, exec_ms = create["warm"]["p50_ms"], mine["c1"]["p50_ms"]
    figures["absolute"] = {"create_warm_p50_ms": warm_ms, "execute_p50_c1_ms": exec_ms}
    lines = table(f"POST /sessions, n={args.n} (baseline: docker run)", list(creates.values()))
    delete = create["delete"]
    lines.append(
        f"  (DELETE /sessions/{{id}} afterwards: p50 {delete['p50_ms']:.1f} ms, "
        f"p90 {delete['p90_ms']:.1f} ms)"
    )
    lines += table("execute 1+1 round trip", list(executes.values()))
    for label, k, bk in (("c=1", "c1", "c1"), (f"c={c}, {c} sessions", "cN_sessions", "cN")):
        o, b = mine[k]["cpu_ms_per_request"], base[bk]["cpu_ms_per_request"]
        lines.append(
            f"  CPU ms/request, {label}: o16n controller {o['server']:.2f}, containers "
            f"{o['containers']:.2f}, client {o['client']:.2f}; baseline server "
            f"{b['server']:.2f}, client {b['client']:.2f}"
        )
    lines.append("o16n/base: > 1 is slower for latency, < 1 is slower for requests/s")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    delete_ms, rps_c1 = create["delete"]["p50_ms"], figures["ratios"]["execute_rps_c1"]
    checks = [  # (issue 14: DELETE and execute at c=1)
        ("POST /sessions p50 from the warm pool <= 20 ms", warm_ms, warm_ms <= 20, " ms"),
        ("DELETE /sessions/{id} p50 <= 10 ms", delete_ms, delete_ms <= 10, " ms"),
        ("execute round trip p50 at c=1 <= 2 ms", exec_ms, exec_ms <= 2, " ms"),
        ("execute requests/s at c=1 >= 0.85 x baseline", rps_c1, rps_c1 >= 0.85, " x"),
    ]
    figures["targets"] = [{"target": t, "value": v, "pass": p} for t, v, p, _ in checks]
    lines += [f"{'PASS' if p else 'MISS'}  {t}: {v:.2f}{unit}" for t, v, p, unit in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="POST /sessions samples of each (20)")
    parser.add_argument("--requests", type=int, default=2000, help="execute requests at c=1")
    parser.add_argument("--warmup-requests", type=int, default=200, help="unrecorded first")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per c=N run (5)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients of c=N runs (4)")
    parser.add_argument("--pool-size", type=int, default=2, help="warm server's pool (2)")
    parser.add_argument("--settle", type=float, default=1.0, help="s a container runs first")
    common_options(parser)
    args = parser.parse_args(argv)
    if min(args.n, args.requests, args.concurrency, args.pool_size) < 1:
        parser.error("--n, --requests, --concurrency and --pool-size must be at least 1")
    if args.duration <= 0 or args.settle < 0 or args.warmup_requests < 0:
        parser.error("--duration must be positive, --settle and --warmup-requests not negative")
    return run_bench("sessions", args, run, summarise, labels=[LABEL, COLD_LABEL])


if __name__ == "__main__":
    raise SystemExit(main())
