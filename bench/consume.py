"""Benchmark of consuming a published service (the quickstart's Iris SVC) with the server's
default settings, against one aiohttp process doing the same predict, and against MLflow's
and BentoML's own servers with the same model, same run.

Starts a server (instance ``o16n-bench-consume``, every setting at its default unless
``--pool-initial`` / ``--pool-max`` are given), the in-process baseline and, when their
virtualenv is there (``make bench-baselines``), MLflow and BentoML; publishes Iris through
the API (bench/_iris.py), then:

1. publish → first consume: from sending ``POST /services/Iris/V1.<i>`` to the first right
   answer of ``POST /api/Iris/V1.<i>``, for ``--n`` versions, each with nothing else starting;
2. ``wrk`` at concurrency 1 and ``--connections`` on every server, one row per request,
   every answer checked: o16n and the in-process server ``--rounds`` times, MLflow and
   BentoML in the first ``--framework-rounds`` rounds, interleaved with the first server
   rotating; the medians of the rounds. CPU per request of each server's process tree,
   of o16n's containers, and the controller's CPU per consume over all its runs;
3. for context, ``clf.predict([x])`` alone in a fresh process.

    .venv/bin/python -m bench.consume [--duration 5] [--rounds 3] [--connections 16]
        [--tree DIR] [--no-frameworks]

Needs ``wrk``. Every container and image labelled ``o16n.instance=o16n-bench-consume`` is
removed at the end, and every server process stopped, also after an error, Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _frameworks as frameworks
from bench import _iris as iris
from bench._bench import run_bench
from bench._client import Api
from bench._docker import (
    containers_cpu,
    instance_containers,
    machine_line,
    machine_load,
    wait_containers_idle,
)
from bench._procs import tree_cpu_seconds
from bench._server import (
    BenchError,
    Server,
    common_options,
    percentile,
    say,
    start_app,
    start_o16n,
)
from bench._wrk import write_script, wrk, wrk_version

INSTANCE = "o16n-bench-consume"
LABEL = f"o16n.instance={INSTANCE}"
LOADED = "V1.0"  # the version wrk loads
EXPECT = ('"success":%s*true', '"iris_species":%s*%[%s*"I%. setosa"%s*%]')  # Lua patterns
#: The servers, in the order of the report; "baseline" is the in-process server.
TITLES = {"o16n": "o16n", "baseline": "in-process", "mlflow": "MLflow", "bentoml": "BentoML"}
#: Figures of a wrk run whose median over the rounds is reported.
MEDIAN_FIELDS = (
    "rps",
    "p50_us",
    "p90_us",
    "p99_us",
    "mean_us",
    "max_us",
    "server_cpu_us_per_request",
    "containers_cpu_us_per_request",
)
#: Issue 14's targets (same-run ratios to the in-process server, the controller's CPU).
RPS_CN_MIN, RPS_C1_MIN, P50_C1_MAX, CONTROLLER_CPU_US_MAX = 1.5, 0.85, 1.15, 150.0

#: The baseline: one process, one event loop, the same SVC and answer (compact JSON).
BASELINE_APP = """
import json, sys
from aiohttp import web
from sklearn import datasets, svm
clf, iris = svm.SVC(), datasets.load_iris()
names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}
clf.fit(iris.data, iris.target)

async def consume(request):
    flower_data = (await request.json())["flower_data"]
    iris_species = [names[x] for x in clf.predict([flower_data])]
    result = {"success": True, "errorMessage": "", "consoleOutput": "", "changedFiles": [],
              "outputParameters": {"iris_species": iris_species}, "outputFiles": {}}
    return web.Response(text=json.dumps(result, separators=(",", ":")),
                        content_type="application/json")

app = web.Application()
app.router.add_post("/api/Iris/V1.0", consume)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""

#: For context: median µs of clf.predict([x]) and of the service's code line, in-process.
PREDICT_TIMING = """
import json, statistics, sys, time
from sklearn import datasets, svm
clf, iris = svm.SVC(), datasets.load_iris()
names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}
clf.fit(iris.data, iris.target)
x, calls = [5.1, 3.5, 1.4, 0.2], int(sys.argv[1])
def timed(f):
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns(); f(); samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000
timed(lambda: clf.predict([x]))
print(json.dumps({"predict_median_us": timed(lambda: clf.predict([x])),
                  "service_code_median_us": timed(lambda: [names[v] for v in clf.predict([x])])}))
"""


def predict_timing(calls: int) -> dict[str, Any]:
    cmd = [sys.executable, "-c", PREDICT_TIMING, str(calls)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"timing clf.predict failed:\n{done.stderr[-2000:]}")
    return {"calls": calls, **json.loads(done.stdout)}


@dataclass(frozen=True)
class Target:
    """A server under load: where wrk sends its request, and the script that checks it."""

    name: str
    server: Server
    url: str
    script: Path


def schedule(
    rounds: int, framework_rounds: int, names: list[str], connections: int
) -> list[tuple[int, str, int, str]]:
    """The runs, in order: (round, "c1"/"cN", concurrency, server). Each round runs c=1
    then c=N; ``names[:2]`` (o16n, in-process) are in every round, the rest in the first
    ``framework_rounds``; the first server rotates from one block to the next, so that a
    drift of the machine hits every server alike."""
    runs = []
    for r in range(rounds):
        present = names if r < framework_rounds else names[:2]
        for i, (key, c) in enumerate((("c1", 1), ("cN", connections))):
            shift = (r + i) % len(present)
            runs += [(r, key, c, name) for name in present[shift:] + present[:shift]]
    return runs


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure per field from a server's rounds at one concurrency: the median of each
    of ``MEDIAN_FIELDS`` (taken field by field), the sums of requests, failures and CPU
    seconds, and the rounds themselves."""
    summary: dict[str, Any] = {"rounds": len(runs)}
    for field in MEDIAN_FIELDS:
        values = [r[field] for r in runs if field in r]
        if values:
            summary[field] = statistics.median(values)
    for field in ("requests", "failures", "server_cpu_s"):
        summary[field] = sum(r.get(field, 0) for r in runs)
    summary["runs"] = runs
    return summary


def measured(target: Target, c: int, args: argparse.Namespace) -> dict[str, Any]:
    """A wrk run, every answer checked (failures counted, not fatal), plus the CPU of the
    server's process tree and (o16n) of its containers, per request."""
    ids = instance_containers(LABEL) if target.name == "o16n" else []
    cpu, in_containers = tree_cpu_seconds(target.server.pid), containers_cpu(ids)
    result = wrk(
        target.url, target.script, c, args.threads, args.duration, check_answers=True, fail=False
    )
    target.server.check_alive()
    requests = max(result["requests"], 1)
    result["server_cpu_s"] = tree_cpu_seconds(target.server.pid) - cpu
    result["server_cpu_us_per_request"] = result["server_cpu_s"] / requests * 1e6
    after = containers_cpu(ids)
    if ids and in_containers is not None and after is not None:
        result["containers_cpu_us_per_request"] = (after - in_containers) / requests * 1e6
        result["containers"] = len(ids)
    return result


def settle_pool(api: Api, connections: int, timeout: float = 15.0) -> dict[str, Any]:
    """After the warm-up: until the loaded version's pool has as many ready containers as
    it may grow to under the load (its max, at most one per connection), idle, for a
    second: what grew in the warm-up has finished starting, and the rounds all see the same
    pool. At most ``timeout`` s (a pool that does not grow that far under this load); its
    last status, and whether it got there."""
    deadline, since = time.monotonic() + timeout, None
    while True:
        status = iris.pool(api, LOADED)
        full = status["ready"] >= min(status["maxPoolSize"], connections)
        if not full or status["busy"] or status["queued"]:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= 1.0:
            return {**status, "full": True}
        if time.monotonic() > deadline:
            return {**status, "full": False}
        time.sleep(0.1)


def start_frameworks(
    args: argparse.Namespace, tmp: Path, figures: dict[str, Any]
) -> list[tuple[frameworks.Framework, Server]]:
    """MLflow's and BentoML's servers, started (not yet answering), if their virtualenv is
    there and they were not left out (none otherwise: ``figures["frameworks"]`` says why)."""
    why = "--no-frameworks" if args.no_frameworks else frameworks.unavailable(args.frameworks_venv)
    figures["frameworks"] = {"run": why is None, "venv": str(args.frameworks_venv), "why": why}
    if why is not None:
        return []
    say("saving the model for MLflow and BentoML ...")
    figures["frameworks"]["versions"] = frameworks.save_models(args.frameworks_venv, tmp)
    figures["frameworks"]["rounds"] = min(args.framework_rounds, args.rounds)
    return [(f, frameworks.start(f, args.frameworks_venv, tmp)) for f in frameworks.FRAMEWORKS]


def publish_versions(api: Api, o16n: Server, figures: dict[str, Any], n: int) -> None:
    """Iris V1.0 ... V1.<n-1>, each timed from publish to its first right consume with
    nothing else starting (the version before has its pool ready and the instance's
    containers are idle: a warm pool it drew on has refilled); then all but V1.0, and the
    snapshot, deleted."""
    say("Iris session, executes, snapshot ...")
    snapshot_id, figures["setup"] = iris.snapshot(api)
    samples = []
    idle = wait_containers_idle(LABEL)  # the session's end, the warm pools' refill
    for i in range(n):
        samples.append({**iris.publish(api, o16n, snapshot_id, f"V1.{i}"), "idle_before_s": idle})
        say(f"publish → first consume V1.{i}: {samples[-1]['first_consume_s']:.3f} s")
        iris.wait_pool(api, f"V1.{i}")  # its initial containers ready,
        idle = wait_containers_idle(LABEL)  # and the warm containers it took replaced
    first = [s["first_consume_s"] for s in samples]
    figures["publish_first_consume"] = {
        "p50_s": percentile(first, 50),
        "max_s": max(first),
        "samples": samples,
    }
    for i in range(1, n):  # only the loaded version keeps containers
        api.ok("DELETE", f"/services/{iris.SERVICE}/V1.{i}")
    api.ok("DELETE", f"/snapshots/{snapshot_id}")


def pool_settings(args: argparse.Namespace) -> dict[str, str]:
    """The server's pool settings the options ask for: none unless given (the defaults are
    what a new user gets, and what is measured)."""
    pools = {}
    if args.pool_initial is not None:
        pools["O16N_SERVICE_POOL_INITIAL"] = str(args.pool_initial)
    if args.pool_max is not None:
        pools["O16N_SERVICE_POOL_MAX"] = str(args.pool_max)
    return pools


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    say("timing clf.predict in-process ...")
    figures["predict_in_process"] = predict_timing(args.predict_calls)
    password = "bench-" + secrets.token_urlsafe(18)
    pools = figures["pool_settings"] = pool_settings(args)
    # the logging defaults too: a line per request in the access log, at INFO (to the
    # server's log file); bench/_server.py turns them off for the other benches
    logging = {"O16N_ACCESS_LOG": "true", "O16N_LOG_LEVEL": "INFO"}
    o16n = start_o16n(
        tmp, password, args.image, instance=INSTANCE, tree=args.tree, env={**logging, **pools}
    )
    baseline = start_app(tmp, "baseline", BASELINE_APP)
    others = start_frameworks(args, tmp, figures)
    servers = [o16n, baseline, *(server for _, server in others)]
    try:
        for server in servers:
            server.wait_ready()
        for framework, server in others:
            frameworks.wait_answering(server, framework)
        api = Api(o16n.url).login(password)
        publish_versions(api, o16n, figures, args.n)
        iris.wait_pool(api, LOADED)
        figures["pool_at_start"] = iris.pool(api, LOADED)

        token = api.token or ""
        body = json.dumps(iris.INPUT, separators=(",", ":"))
        script = write_script(tmp / "consume.lua", "POST", token, body, EXPECT)
        path = f"/api/{iris.SERVICE}/{LOADED}"
        targets = [Target("o16n", o16n, o16n.url + path, script)]
        targets.append(Target("baseline", baseline, baseline.url + path, script))
        for f, server in others:
            own = write_script(tmp / f"{f.name}.lua", "POST", token, f.body, f.expect)
            targets.append(Target(f.name, server, server.url + f.path, own))
        by_name = {t.name: t for t in targets}
        for target in targets if args.warmup else ():  # not recorded
            say(f"{TITLES[target.name]}: warm-up, {args.warmup} s ...")
            wrk(target.url, target.script, args.connections, args.threads, args.warmup)
        figures["pool_before_runs"] = settle_pool(api, args.connections)

        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            t.name: {"c1": [], "cN": []} for t in targets
        }
        plan = schedule(args.rounds, args.framework_rounds, list(by_name), args.connections)
        for r, key, c, name in plan:
            say(f"round {r + 1}: {TITLES[name]}, c={c}, {args.duration} s ...")
            runs[name][key].append(measured(by_name[name], c, args))
        for name, by_key in runs.items():
            figures[name] = {"run": True, **{k: median_of(v) for k, v in by_key.items()}}
        iris.wait_pool(api, LOADED, 0, timeout=10, fatal=False)  # wrk's last requests done
        figures["pool_after"] = iris.pool(api, LOADED)
        figures["machine_at_end"] = machine_load(LABEL)
        api.ok("DELETE", f"/services/{iris.SERVICE}/{LOADED}")  # its containers and image go
        return figures
    finally:
        for server in servers:
            server.stop()


def ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def cell(value: float | None, base: float | None, digits: int) -> str:
    """A table cell: the value and, if there is a base, the value as a multiple of it."""
    if value is None:
        return "-"
    text = f"{value:,.{digits}f}"
    times = ratio(value, base)
    return text if times is None else f"{text} ({times:.2f}x)"


def results_table(figures: dict[str, Any], connections: int) -> list[str]:
    """The issue's table: a column per server that ran, each figure with its multiple of
    the in-process server's."""
    names = [n for n in TITLES if figures.get(n, {}).get("run")]
    base = figures["baseline"]
    rows = []
    for key, c in (("c1", 1), ("cN", connections)):
        rows += [(f"c={c}, requests/s", key, "rps", 1.0, 0)]
        rows += [(f"c={c}, p50 (ms)", key, "p50_us", 1e-3, 3)]
    for key, c in (("c1", 1), ("cN", connections)):
        rows += [(f"c={c}, p99 (ms)", key, "p99_us", 1e-3, 3)]
        rows += [(f"c={c}, CPU/request (µs)", key, "server_cpu_us_per_request", 1.0, 0)]
    lines = ["  " + f"{'':24}" + "".join(f"{TITLES[n]:>20}" for n in names)]
    for label, key, field, scale, digits in rows:
        cells = []
        for n in names:
            value = figures[n][key].get(field)
            mine = value * scale if value is not None else None
            theirs = base[key][field] * scale
            cells.append(cell(mine, None if n == "baseline" else theirs, digits))
        lines.append("  " + f"{label:24}" + "".join(f"{c:>20}" for c in cells))
    failed = [
        f"{TITLES[n]} {figures[n]['c1']['failures'] + figures[n]['cN']['failures']}" for n in names
    ]
    lines.append("  failed requests: " + ", ".join(failed))
    return lines


def summarise(figures: dict[str, Any], args: argparse.Namespace) -> str:
    """Ratios and targets into ``figures``; the report."""
    o16n, base = figures["o16n"], figures["baseline"]
    ratios = {
        f"{p}_{k}": o16n[k][f"{p}_us"] / base[k][f"{p}_us"]
        for k in ("c1", "cN")
        for p in ("p50", "p90", "p99")
    }
    for k in ("c1", "cN"):
        ratios[f"rps_{k}"] = o16n[k]["rps"] / base[k]["rps"]
        cpu = o16n[k]["server_cpu_us_per_request"] / base[k]["server_cpu_us_per_request"]
        ratios[f"server_cpu_{k}"] = cpu
    figures["ratios"] = ratios
    requests = o16n["c1"]["requests"] + o16n["cN"]["requests"]
    controller_cpu = (
        (o16n["c1"]["server_cpu_s"] + o16n["cN"]["server_cpu_s"]) / max(requests, 1) * 1e6
    )
    first = figures["publish_first_consume"]
    figures["absolute"] = {
        "first_consume_p50_s": first["p50_s"],
        "p50_c1_ms": o16n["c1"]["p50_us"] / 1000,
        "controller_cpu_us_per_consume": controller_cpu,
    }
    for name in ("mlflow", "bentoml"):  # to the in-process server, like o16n's
        if name in figures and figures[name].get("run"):
            figures[name]["ratios"] = {
                f"{label}_{k}": figures[name][k][field] / base[k][field]
                for k in ("c1", "cN")
                for label, field in (("rps", "rps"), ("p50", "p50_us"))
            }
        else:
            figures[name] = {"run": False, "why": figures["frameworks"]["why"]}
    c = args.connections
    at_start = figures["pool_at_start"]
    sizes = f"pool {at_start['initialPoolSize']}/{at_start['maxPoolSize']}"
    given = (
        "as asked (--pool-initial/--pool-max)"
        if figures["pool_settings"]
        else "the server's defaults"
    )
    rounds = f"median of {args.rounds} interleaved round(s)"
    fw = figures["frameworks"]
    lines = [
        f"POST /api/Iris/{LOADED}, {given} ({sizes}, from GET …/pool), one row per request; "
        f"wrk {args.duration} s per run, {args.threads} thread(s); o16n and in-process: {rounds}"
        + (
            f"; MLflow and BentoML: {fw['rounds']} round(s) (--framework-rounds: they are slow, "
            "and the run is kept short)"
            if fw["run"]
            else ""
        ),
        *results_table(figures, c),
        "  (x: multiple of the in-process server's figure; CPU/request: the server's process "
        "tree, for o16n the controller alone)",
    ]
    if not fw["run"]:
        lines.append(f"MLflow and BentoML: not run ({fw['why']}); {frameworks.HOW_TO_INSTALL}")
    else:
        versions = ", ".join(f"{k} {v}" for k, v in fw["versions"].items())
        lines.append(f"MLflow and BentoML: their default servers ({versions})")
    per_round = [
        f"{a['rps'] / b['rps']:.2f}"
        for a, b in zip(o16n["cN"]["runs"], base["cN"]["runs"], strict=True)
    ]
    per_round_1 = [
        f"{a['rps'] / b['rps']:.2f}"
        for a, b in zip(o16n["c1"]["runs"], base["c1"]["runs"], strict=True)
    ]
    lines.append(
        f"o16n/in-process requests/s, round by round: c=1 {', '.join(per_round_1)}; "
        f"c={c} {', '.join(per_round)}"
    )
    cpu_by_key = ", ".join(
        f"c={n} {o16n[k]['server_cpu_s'] / max(o16n[k]['requests'], 1) * 1e6:.0f}"
        for k, n in (("c1", 1), ("cN", c))
    )
    lines.append(
        f"controller CPU per consume: {controller_cpu:.0f} µs over all its runs ({cpu_by_key})"
    )
    for k, n in (("c1", 1), ("cN", c)):
        if "containers_cpu_us_per_request" in o16n[k]:
            cpu = o16n[k]["containers_cpu_us_per_request"]
            lines.append(f"o16n's containers' CPU per request, c={n}: {cpu:.1f} µs")
    before, after = figures["pool_before_runs"], figures["pool_after"]
    lines.append(
        f"pool: ready {before['ready']} before the rounds"
        f"{'' if before['full'] else ' (it had not grown to its max after the warm-up)'}, "
        f"ready {after['ready']} (busy {after['busy']}) at the end"
    )
    samples = ", ".join(f"{s['first_consume_s']:.3f}" for s in first["samples"])
    busy = [s["version"] for s in first["samples"] if s.get("idle_before_s") is None]
    lines.append(
        f"publish → first consume (s): p50 {first['p50_s']:.3f}, max "
        f"{first['max_s']:.3f} ({samples}), each once the instance's containers were idle"
        + (f" (except before {', '.join(busy)}: not idle within 60 s)" if busy else "")
    )
    timing = figures["predict_in_process"]
    lines.append(
        f"in-process: clf.predict([x]) {timing['predict_median_us']:.1f} µs, the "
        f"service's line {timing['service_code_median_us']:.1f} µs (median)"
    )
    setup = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in figures["setup"].items())
    lines.append(f"setup (s): {setup}")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    failures = o16n["c1"]["failures"] + o16n["cN"]["failures"]
    worst = first["max_s"]
    checks = [  # issue 14's targets, and publish → first consume (issue 4's)
        (
            f"requests/s at c={c} >= {RPS_CN_MIN} x in-process",
            ratios["rps_cN"],
            ratios["rps_cN"] >= RPS_CN_MIN,
        ),
        (
            f"requests/s at c=1 >= {RPS_C1_MIN} x in-process",
            ratios["rps_c1"],
            ratios["rps_c1"] >= RPS_C1_MIN,
        ),
        (
            f"p50 at c=1 <= {P50_C1_MAX} x in-process",
            ratios["p50_c1"],
            ratios["p50_c1"] <= P50_C1_MAX,
        ),
        (
            f"controller CPU per consume <= {CONTROLLER_CPU_US_MAX:.0f} µs",
            controller_cpu,
            controller_cpu <= CONTROLLER_CPU_US_MAX,
        ),
        ("no failed requests (o16n, every run)", failures, failures == 0),
        ("publish → first consume <= 2 s, every sample", worst, worst <= 2.0),
    ]
    figures["targets"] = [{"target": t, "value": v, "pass": p} for t, v, p in checks]
    lines += [f"{'PASS' if p else 'MISS'}  {t}: {v:.3f}" for t, v, p in checks]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrency N (16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of o16n and in-process (3)")
    parser.add_argument(
        "--framework-rounds", type=int, default=1, help="of those, with MLflow and BentoML (1)"
    )
    parser.add_argument("--n", type=int, default=5, help="versions published and timed (5)")
    parser.add_argument(
        "--pool-initial", type=int, help="O16N_SERVICE_POOL_INITIAL (default: not set)"
    )
    parser.add_argument("--pool-max", type=int, help="O16N_SERVICE_POOL_MAX (default: not set)")
    parser.add_argument("--predict-calls", type=int, default=2000, help="in-process (2000)")
    parser.add_argument(
        "--frameworks-venv",
        type=Path,
        default=frameworks.VENV,
        help="virtualenv with MLflow and BentoML (.venv-baselines: make bench-baselines)",
    )
    parser.add_argument("--no-frameworks", action="store_true", help="leave MLflow and BentoML out")
    common_options(parser)
    args = parser.parse_args(argv)
    counts = (
        args.duration,
        args.connections,
        args.threads,
        args.n,
        args.predict_calls,
        args.rounds,
    )
    if min(counts) < 1:
        parser.error(
            "--duration, --connections, --threads, --n, --predict-calls, --rounds must be >= 1"
        )
    if args.warmup < 0 or args.framework_rounds < 1:
        parser.error("need --warmup >= 0 and --framework-rounds >= 1")
    if args.pool_initial is not None and args.pool_initial < 0:
        parser.error("--pool-initial must be >= 0")
    if args.pool_max is not None and args.pool_max < max(1, args.pool_initial or 0):
        parser.error("--pool-max must be >= 1 and >= --pool-initial")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # service images are tags of the snapshot's image, which carries the label
    return run_bench(
        "consume",
        args,
        run,
        summarise,
        labels=[LABEL],
        tools=["wrk", "docker"],
        images=True,
        wrk=wrk_version(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
