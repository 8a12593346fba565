"""Benchmark of consuming a published service (the quickstart's Iris SVC) against one aiohttp
process doing the same predict, same run.

Starts a server (instance ``o16n-bench-consume``, service pools of ``--pool-initial`` /
``--pool-max``), publishes Iris through the API (bench/_iris.py), then:

1. publish → first consume: from sending ``POST /services/Iris/V1.<i>`` to the first right
   answer of ``POST /api/Iris/V1.<i>``, for ``--n`` versions, each with nothing else starting;
2. ``wrk`` on ``POST /api/Iris/V1.0`` at concurrency 1 and ``--connections``, every answer
   checked, and the same against the baseline (the same SVC trained at start, the same JSON
   answer), runs interleaved; CPU per request of each server (and of o16n's containers);
3. for context, ``clf.predict([x])`` alone in a fresh process.

    .venv/bin/python -m bench.consume [--duration 10] [--n 5] [--connections 16] [--tree DIR]

Needs ``wrk``. Every container and image labelled ``o16n.instance=o16n-bench-consume`` is
removed at the end, also after an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import _iris as iris
from bench._bench import run_bench
from bench._client import Api
from bench._docker import containers_cpu, instance_containers, machine_line, machine_load
from bench._server import (
    BenchError,
    Server,
    common_options,
    cpu_seconds,
    percentile,
    say,
    start_app,
    start_o16n,
    table,
)
from bench._wrk import write_script, wrk, wrk_version

INSTANCE = "o16n-bench-consume"
LABEL = f"o16n.instance={INSTANCE}"
LOADED = "V1.0"  # the version wrk loads
EXPECT = ('"success":%s*true', '"iris_species":%s*%[%s*"I%. setosa"%s*%]')  # Lua patterns

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


def measured(server: Server, url: str, script: Path, c: int, args: argparse.Namespace) -> Any:
    """A wrk run, plus CPU µs per request of the server and (o16n) of its containers."""
    ids = instance_containers(LABEL) if server.name == "o16n" else []
    cpu, in_containers = cpu_seconds(server.pid), containers_cpu(ids)
    result = wrk(url, script, c, args.threads, args.duration, check_answers=True)
    server.check_alive()
    requests = max(result["requests"], 1)
    result["server_cpu_us_per_request"] = (cpu_seconds(server.pid) - cpu) / requests * 1e6
    after = containers_cpu(ids)
    if ids and in_containers is not None and after is not None:
        result["containers_cpu_us_per_request"] = (after - in_containers) / requests * 1e6
        result["containers"] = len(ids)
    return result


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"machine_at_start": machine_load(LABEL)}
    say("timing clf.predict in-process ...")
    figures["predict_in_process"] = predict_timing(args.predict_calls)
    password = "bench-" + secrets.token_urlsafe(18)
    pools = {"O16N_SERVICE_POOL_INITIAL": str(args.pool_initial)}
    pools["O16N_SERVICE_POOL_MAX"] = str(args.pool_max)
    o16n = start_o16n(tmp, password, args.image, instance=INSTANCE, tree=args.tree, env=pools)
    baseline = start_app(tmp, "baseline", BASELINE_APP)
    try:
        for server in (o16n, baseline):
            server.wait_ready()
        api = Api(o16n.url).login(password)
        say("Iris session, executes, snapshot ...")
        snapshot_id, figures["setup"] = iris.snapshot(api)
        samples = []
        for i in range(args.n):
            samples.append(iris.publish(api, o16n, snapshot_id, f"V1.{i}"))
            say(f"publish → first consume V1.{i}: {samples[-1]['first_consume_s']:.3f} s")
            iris.wait_pool(api, f"V1.{i}", args.pool_initial)  # nothing starting for the next
        first = [s["first_consume_s"] for s in samples]
        figures["publish_first_consume"] = {
            "p50_s": percentile(first, 50),
            "max_s": max(first),
            "samples": samples,
        }
        for i in range(1, args.n):  # only the loaded version keeps containers
            api.ok("DELETE", f"/services/{iris.SERVICE}/V1.{i}")
        api.ok("DELETE", f"/snapshots/{snapshot_id}")
        iris.wait_pool(api, LOADED, args.pool_initial)

        targets = {"o16n": o16n, "baseline": baseline}
        urls = {name: f"{s.url}/api/{iris.SERVICE}/{LOADED}" for name, s in targets.items()}
        body = json.dumps(iris.INPUT, separators=(",", ":"))
        script = write_script(tmp / "consume.lua", "POST", api.token or "", body, EXPECT)
        for name in targets if args.warmup else ():  # not recorded
            say(f"{name}: warm-up, {args.warmup} s ...")
            wrk(urls[name], script, args.connections, args.threads, args.warmup)
        # a pool that may grow grew in the warm-up: let its new containers finish starting
        grown = min(args.pool_max, args.connections) if args.warmup else args.pool_initial
        figures["pool_grown_before_runs"] = iris.wait_pool(api, LOADED, grown, fatal=False)
        figures["o16n"], figures["baseline"] = {}, {}
        # interleaved, the first server alternating, so that drift hits both alike
        for key, c, names in (("c1", 1, targets), ("cN", args.connections, reversed(targets))):
            for name in names:
                say(f"{name}: c={c}, {args.duration} s ...")
                figures[name][key] = measured(targets[name], urls[name], script, c, args)
        figures["pool_after"] = api.ok("GET", f"/services/{iris.SERVICE}/{LOADED}/pool")[0]
        figures["machine_at_end"] = machine_load(LABEL)
        api.ok("DELETE", f"/services/{iris.SERVICE}/{LOADED}")  # its containers and image go
        return figures
    finally:
        o16n.stop()
        baseline.stop()


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
    first = figures["publish_first_consume"]
    figures["ratios"] = ratios
    figures["absolute"] = {
        "first_consume_p50_s": first["p50_s"],
        "p50_c1_ms": o16n["c1"]["p50_us"] / 1000,
    }
    c, rows = args.connections, []
    for k, n in (("c1", 1), ("cN", c)):
        rows += [(f"p{p} latency, c={n} (ms)", k, f"p{p}_us", 1e-3) for p in (50, 90, 99)]
        rows += [(f"requests/s, c={n}", k, "rps", 1.0)]
        rows += [(f"server CPU/request, c={n} (µs)", k, "server_cpu_us_per_request", 1.0)]
    lines = [
        f"POST /api/Iris/{LOADED} (pool {args.pool_initial}/{args.pool_max}) vs aiohttp + the "
        f"same SVC in one process; wrk {args.duration} s per run, {args.threads} thread(s)",
        *table("", [(label, o16n[k][key] * x, base[k][key] * x) for label, k, key, x in rows]),
        "o16n/base: > 1 is slower for latency and CPU, < 1 is slower for requests/s",
    ]
    for k, n in (("c1", 1), ("cN", c)):
        if "containers_cpu_us_per_request" in o16n[k]:
            cpu = o16n[k]["containers_cpu_us_per_request"]
            lines.append(f"o16n's containers' CPU per request, c={n}: {cpu:.1f} µs")
    samples = ", ".join(f"{s['first_consume_s']:.3f}" for s in first["samples"])
    lines.append(
        f"publish → first consume (s): p50 {first['p50_s']:.3f}, max "
        f"{first['max_s']:.3f} ({samples})"
    )
    timing = figures["predict_in_process"]
    lines.append(
        f"in-process: clf.predict([x]) {timing['predict_median_us']:.1f} µs, the "
        f"service's line {timing['service_code_median_us']:.1f} µs (median)"
    )
    setup = ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in figures["setup"].items())
    lines.append(f"setup (s): {setup}")
    lines.append(machine_line(figures["machine_at_start"], figures["machine_at_end"]))
    p50, ratio, worst = figures["absolute"]["p50_c1_ms"], ratios["rps_cN"], first["max_s"]
    checks = [  # the targets of the issue that introduced this bench
        (f"requests/s at c={c} >= 1 x baseline", ratio, ratio >= 1.0),
        ("p50 latency at c=1 <= 0.6 ms", p50, p50 <= 0.6),
        ("publish → first consume <= 2 s, every sample", worst, worst <= 2.0),
    ]
    figures["targets"] = [{"target": t, "value": v, "pass": p} for t, v, p in checks]
    lines += [f"{'PASS' if p else 'MISS'}  {t}: {v:.3f}" for t, v, p in checks]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server (3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrency of run 2 (16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--n", type=int, default=5, help="versions published and timed (5)")
    parser.add_argument("--pool-initial", type=int, default=2, help="InitialPoolSize (2)")
    parser.add_argument("--pool-max", type=int, default=2, help="MaxPoolSize (2)")
    parser.add_argument("--predict-calls", type=int, default=2000, help="in-process (2000)")
    common_options(parser)
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.threads, args.n, args.predict_calls) < 1:
        parser.error("--duration, --connections, --threads, --n, --predict-calls must be >= 1")
    if args.warmup < 0 or args.pool_initial < 1 or args.pool_max < args.pool_initial:
        parser.error("need --warmup >= 0 and 1 <= --pool-initial <= --pool-max")
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
